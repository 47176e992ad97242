"""The label-free choice of the infotheoretic detector's default score.

For every score: its AUROC between normal validation images and pseudo-anomalies (physical
perturbers when given, else local patch swaps), and its view consistency (the Spearman
correlation of its values on two independent augmented views). The winner has the highest
pseudo-AUROC (to 0.01), then the highest consistency (docs/infotheoretic.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata, spearmanr  # scipy comes with scikit-learn
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from darklens.data.transforms import local_patch_swap


def auroc(normal: Tensor, anomalous: Tensor) -> float:
    """AUROC of separating two score samples (ties count one half; NaN or an empty side -> 0.5).

    Scored on ranks (the AUROC depends on nothing else), so infinite scores keep their order.
    """
    a, b = normal.double().cpu().numpy(), anomalous.double().cpu().numpy()
    if np.isnan(a).any() or np.isnan(b).any() or a.size == 0 or b.size == 0:
        return 0.5
    labels = np.r_[np.zeros(a.size), np.ones(b.size)]
    return float(roc_auc_score(labels, rankdata(np.r_[a, b])))


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (0 when either is constant or not finite)."""
    x, y = a.double().cpu().numpy(), b.double().cpu().numpy()
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or x.std() == 0 or y.std() == 0:
        return 0.0
    rho = float(spearmanr(x, y).statistic)
    return 0.0 if math.isnan(rho) else rho


class ScoreSelection(nn.Module):
    """Mixin of the infotheoretic detector: ``select_score`` and the buffers it fills.

    Needs ``score_names``, ``score_all``, ``augment``, ``config["seed"]`` and the ``pseudo``
    buffer (``anomalies.AnomalyInputs``).
    """

    config: dict[str, Any]
    augment: Callable[[Tensor, torch.Generator], Tensor]
    pseudo: Tensor
    score_names: Callable[[], list[str]]
    score_all: Callable[[Tensor], dict[str, Tensor]]

    def _init_selection(self, n_scores: int) -> None:
        """Register the selection's buffers (saved with the weights)."""
        self.register_buffer("selected_score", torch.tensor(-1))  # index into score_names()
        self.register_buffer("selection_values", torch.full((n_scores,), float("nan")))
        self.register_buffer("consistency_values", torch.full((n_scores,), float("nan")))
        self.register_buffer("patch_swap_values", torch.full((n_scores,), float("nan")))

    @torch.no_grad()
    def select_score(self, images: Tensor) -> dict[str, dict[str, float]]:
        """Label-free choice of the default score on normal images (module docstring).

        For every score: ``pseudo_auroc``, its AUROC between the normal images and
        pseudo-anomalies: those given by ``set_pseudo_anomalies`` (physical perturbers) when
        there are any, else local patch swaps of the same images (``local_patch_swap``; its
        AUROC is always computed, as ``patch_swap_auroc``, for comparison); and
        ``view_consistency``, the Spearman correlation of its values on two independent
        augmented views. The winner has the highest pseudo-AUROC (rounded to 0.01), then the
        highest view consistency, then comes first in ``score_names``. Stored in buffers.
        """
        gen = torch.Generator().manual_seed(int(self.config["seed"]) + 104729)
        names = self.score_names()
        normal = self.score_all(images)
        swapped = self.score_all(local_patch_swap(images, gen))
        a = self.score_all(self.augment(images, gen))
        b = self.score_all(self.augment(images, gen))
        swap_auroc = torch.tensor([auroc(normal[n], swapped[n]) for n in names])
        if self.pseudo.dim() == 4 and self.pseudo.shape[0] > 0:
            pseudo = self.score_all(self.pseudo)
            values = torch.tensor([auroc(normal[n], pseudo[n]) for n in names])
        else:
            values = swap_auroc
        self.patch_swap_values.copy_(swap_auroc)
        consistency = torch.tensor([spearman(a[n], b[n]) for n in names])
        self.selection_values.copy_(values)
        self.consistency_values.copy_(consistency)
        best = max(range(len(names)), key=lambda i: (round(float(values[i]), 2),
                                                     round(float(consistency[i]), 6), -i))
        self.selected_score.fill_(best)
        return {n: {"pseudo_auroc": float(values[i]), "patch_swap_auroc": float(swap_auroc[i]),
                    "view_consistency": float(consistency[i])} for i, n in enumerate(names)}

    def selection_diagnostics(self) -> dict[str, Any]:
        """The choice and every score's pseudo-AUROCs and view consistency, JSON-able."""
        names = self.score_names()
        sel = int(self.selected_score)

        def by_name(values: Tensor) -> dict[str, float]:
            return {n: float(v) for n, v in zip(names, values, strict=True)}

        return {
            "selected_score": names[sel] if sel >= 0 else None,
            "pseudo_auroc": by_name(self.selection_values),
            "view_consistency": by_name(self.consistency_values),
            "patch_swap_auroc": by_name(self.patch_swap_values),
            "pseudo_kind": "physical" if self.pseudo.dim() == 4 and self.pseudo.shape[0] else
            "patch_swap",
        }
