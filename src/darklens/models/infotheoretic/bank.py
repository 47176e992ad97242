"""The infotheoretic detector's memory bank (built after training) and the scores read from it.

The bank holds the backbone and projection features (and, for the spatial encoder, the unit
patch features) of up to ``bank_size`` training images and, with ``bank_dihedral``, of their
seven other right-angle turns and flips (docs/infotheoretic.md). ``score_all`` gives every
score: ``norm``, ``neg_norm``, ``knn``, ``critic`` (+ ``patch_knn``, ``recon``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The eight right-angle turns and flips, as (quarter turns, mirror first): identity first.
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


class MemoryBank(nn.Module):
    """Mixin of the infotheoretic detector: ``fit_end`` builds the bank; ``score_all`` reads it.

    Needs the detector's ``_encode_maps``, ``_first_view``, ``_z``, ``penalty``, ``critic``,
    ``decoder``, ``score_names``, and the ``select_score`` and ``_check_bank_collapse`` of the
    other mixins.
    """

    config: dict[str, Any]
    critic: nn.Module
    decoder: nn.Module | None
    _encode_maps: Callable[[Tensor], tuple[Tensor, Tensor, Tensor | None]]
    _first_view: Callable[[Tensor], Tensor]
    _z: Callable[[Tensor, Tensor], Tensor]
    penalty: Callable[[Tensor], Tensor]
    score_names: Callable[[], list[str]]
    select_score: Callable[[Tensor], Any]
    _check_bank_collapse: Callable[[Tensor], None]

    def _init_bank(self, feat_dim: int, proj_dim: int, patch_dim: int) -> None:
        """Register the (empty) bank buffers; their size is set by ``fit_end`` or a checkpoint."""
        self.register_buffer("bank_backbone", torch.zeros(0, feat_dim))
        self.register_buffer("bank_projection", torch.zeros(0, proj_dim))
        self.register_buffer("bank_patches", torch.zeros(0, 0, patch_dim))  # (N, s*s, patch_dim)

    @torch.no_grad()
    def fit_end(self, loader: Iterable, val_loader: Iterable | None = None) -> None:
        """After training: build the memory bank and pick the default score, label-free.

        The score is chosen on up to ``select_images`` normal validation images; without a
        validation loader, every fifth training image (with its turns) is held out of the bank
        for the choice and put back afterwards.
        """
        was_training = self.training
        self.eval()
        cap = int(self.config["bank_size"])
        n_sel = int(self.config["select_images"])
        transforms = DIHEDRAL if self.config["bank_dihedral"] else DIHEDRAL[:1]
        hs: list[list[Tensor]] = [[] for _ in transforms]
        ps: list[list[Tensor]] = [[] for _ in transforms]
        ms: list[list[Tensor]] = [[] for _ in transforms]
        held, seen = [], 0
        for images in take(loader, cap):
            images = self._first_view(images)
            for t, (turns, flip) in enumerate(transforms):
                h, p, maps = self._encode_maps(torch.rot90(images.flip(-1) if flip else images,
                                                           turns, dims=(-2, -1)))
                hs[t].append(h)
                ps[t].append(p)
                if maps is not None:  # unit patch features (N, s*s, patch_dim)
                    ms[t].append(F.normalize(maps.flatten(2).transpose(1, 2), dim=2))
            if val_loader is None:
                held.append(images[(torch.arange(images.shape[0]) + seen) % 5 == 0])
            seen += images.shape[0]
        if not hs[0]:
            raise ValueError("infotheoretic: no training images to build the memory bank")
        n = min(cap, seen)
        bank_h = torch.cat([torch.cat(h)[:n] for h in hs])
        bank_p = torch.cat([torch.cat(p)[:n] for p in ps])
        if val_loader is not None:
            sel_images = self._first_view(torch.cat(list(take(val_loader, n_sel)))[:n_sel])
            keep = torch.ones(n, dtype=torch.bool)
        else:
            sel_images = torch.cat(held)[:n_sel]
            keep = torch.arange(n) % 5 != 0
            keep[(torch.arange(n) % 5 == 0).nonzero().flatten()[n_sel:]] = True
        keep = keep.repeat(len(transforms)).to(bank_h.device)
        bank_m = torch.cat([torch.cat(m)[:n] for m in ms]) if ms[0] else self.bank_patches
        cap_m = int(self.config["patch_bank_size"])  # the patch bank is s*s times larger
        self.bank_backbone, self.bank_projection = bank_h[keep], bank_p[keep]
        if ms[0]:
            self.bank_patches = bank_m[keep][:cap_m]
        if sel_images.shape[0] >= 3 and self.bank_backbone.shape[0] > 0:
            self.select_score(sel_images)
        self.bank_backbone, self.bank_projection = bank_h, bank_p
        if ms[0]:
            self.bank_patches = bank_m[:cap_m]
        self._check_bank_collapse(self._z(self.bank_backbone, self.bank_projection))
        self.train(was_training)

    def _take_bank_shapes(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Resize the bank buffers to a checkpoint's (the bank's size depends on the data)."""
        for name in ("bank_backbone", "bank_projection", "bank_patches"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))

    @torch.no_grad()
    def score_all(self, images: Tensor) -> dict[str, Tensor]:
        """Every anomaly score, each (B,) with higher = more anomalous.

        ``knn`` and ``critic`` need the memory bank (built by ``fit_end``); without it they
        are NaN.
        """
        out: dict[str, list[Tensor]] = {n: [] for n in self.score_names()}
        for chunk in images.split(256):
            h, p, maps = self._encode_maps(chunk)
            r = self.penalty(self._z(h, p))
            out["norm"].append(r)
            out["neg_norm"].append(-r)
            out["knn"].append(self._knn(h, p))
            out["critic"].append(self._critic_score(p))
            if maps is not None:
                out["patch_knn"].append(self._patch_knn(maps))
            if self.decoder is not None:
                out["recon"].append(((self.decoder(h) - chunk) ** 2).flatten(1).mean(1))
        return {n: torch.cat(v) for n, v in out.items()}

    def _knn(self, h: Tensor, p: Tensor) -> Tensor:
        bank = self.bank_backbone if self.config["knn_space"] == "backbone" else \
            self.bank_projection
        if bank.shape[0] == 0:
            return torch.full((h.shape[0],), float("nan"), device=h.device)
        q = h if self.config["knn_space"] == "backbone" else p
        sim = F.normalize(q, dim=1) @ F.normalize(bank, dim=1).T
        k = min(int(self.config["knn_k"]), bank.shape[0])
        return (1.0 - sim.topk(k, dim=1).values).mean(dim=1)

    def _patch_knn(self, maps: Tensor) -> Tensor:
        """Patch-level score: per position, the mean cosine distance of the image's patch
        feature to its k nearest training patches at the same position; the maximum over
        positions. A small perturbation changes a few patches, which a whole-image feature
        averages away."""
        bank = self.bank_patches
        if bank.shape[0] == 0:
            return torch.full((maps.shape[0],), float("nan"), device=maps.device)
        q = F.normalize(maps.flatten(2).transpose(1, 2), dim=2)  # (B, P, C)
        ref = bank.permute(1, 2, 0)  # (P, C, N), unit rows already
        k = min(int(self.config["knn_k"]), bank.shape[0])
        out = []
        for part in q.split(32):
            sim = torch.bmm(part.transpose(0, 1), ref)  # (P, b, N)
            dist = (1.0 - sim.topk(k, dim=2).values).mean(dim=2)  # (P, b)
            out.append(dist.max(dim=0).values)
        return torch.cat(out)

    def _critic_score(self, p: Tensor) -> Tensor:
        bank = self.bank_projection
        if bank.shape[0] == 0:
            return torch.full((p.shape[0],), float("nan"), device=p.device)
        f = torch.cat([self.critic(p, part) for part in bank.split(1024)], dim=1)
        return -(torch.logsumexp(f, dim=1) - math.log(bank.shape[0]))


def take(loader: Iterable, limit: int) -> Iterator[Tensor]:
    """Image tensors from a loader (images or (images, labels) batches), up to ``limit``."""
    n = 0
    for batch in loader:
        if n >= limit:
            return
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        yield images
        n += images.shape[0]
