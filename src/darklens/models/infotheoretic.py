"""The information-theoretic detector: max I_n(X, Z) - beta H_n(Z), the project's own method.

Seed proposal and Ye et al. 2020 (arXiv:2012.04837). Maximising KL[p_n(Z,X) || p_a(Z,X)]
splits into I_n(X,Z) - H_n(Z) + (a cross-entropy term that needs anomalies) + a constant.
Dropping the anomaly term leaves an unsupervised objective; per batch of K normal images

    L = infonce(f(z_i, zbar_j)) + beta * mean_i R(z_i)       (see ``darklens.models.losses``)

where zbar_i encodes an independently augmented view of image i (``darklens.data.transforms``)
and f is a critic (``darklens.models.critics``).

Architecture and where each term acts (explicit config keys):

    x -> backbone -> h (feat_dim) -> projection head -> p (proj_dim) -> critic f

- ``encoder``: ``"pooled"`` (SmallCNN: strided from the first layer, global average pooling;
  where a feature sits is lost) or ``"spatial"`` (``encoders.SpatialCNN``: coordinate channels
  x, y, r around the lens centre, no pooling, h from the whole patch map; adds the patch-level
  score ``patch_knn``).
- ``entropy_on``: ``"projection"`` (R acts on p) or ``"backbone"`` (R acts on h). The critic
  always sees p.
- ``critic`` and the trade-off. Only ``critic="dot"`` (f = p . pbar / temperature on the raw p)
  with the entropy on the projection makes beta trade I(X, Z) against H(Z): a smaller p is a
  blunter critic, so raising beta lowers the entropy bound and the InfoNCE bound together
  (``entropy_coupled`` in ``diagnostics``; losses.csv records both per epoch). The cosine
  critic (the default, and the seed's form) sees p / ||p||, so R(p) is lowered by shrinking the
  head's last layer at no cost to InfoNCE; beta then only shapes the norm that the ``norm``
  score reads. The learned bilinear and MLP critics can absorb a shrinking p in their weights.
  Measured on ``demo`` (1000 normals, 12 epochs, one seed, 2026-12-03; ``python
  benchmarks/infotheoretic.py --preset demo --groups tradeoff``): beta 0 -> 1 moves the dot
  critic's entropy bound 3.98 -> 0.90 and its InfoNCE bound 4.59 -> 4.18 nats, kNN AUROC
  0.85-0.88; the cosine form's InfoNCE bound does not fall (4.69 -> 4.72) and its kNN AUROC is
  0.92-0.95. The real trade-off is the option; the better detector is the default.
- ``normalize``: whether the bilinear or MLP critic sees p / ||p||.

Anomaly scores (``score_all`` gives them all; ``score`` the selected one):

- ``norm``: R(z - c) (c = 0 unless ``center``), the entropy view: normal data sit near the mode.
- ``neg_norm``: -R(z - c). Contrastive training is known to give unexpected inputs smaller
  norms, so the opposite direction is measured too.
- ``knn``: mean cosine distance to the k nearest training features (``knn_space``: backbone h
  or projection p), from a memory bank built after training (``fit_end``).
- ``critic``: -log((1/N) sum_j exp f(p, pbar_j)) over the bank: the InfoNCE denominator read
  as a kernel density of the image under the normal training features (low = anomalous).
- ``recon``: reconstruction MSE, only for the autoencoder hybrid (``recon_weight > 0``).

Default score (``score="auto"``): chosen without anomaly labels on normal validation images
(``select_score``): first by pseudo-AUROC, the AUROC of each score between those images and
pseudo-anomalies, either physical ones given by ``set_pseudo_anomalies`` (the same lenses
re-rendered by the simulator with random point-mass perturbers,
``darklens.simulate.pseudo``) or, without them, local patch swaps of the images; ties (to
0.01) go to view consistency, the Spearman correlation of a score's values on two independent
augmented views (reliability, not validity: ``norm`` and ``neg_norm`` tie exactly there).
Every score and both pseudo-AUROCs are reported so the choice can be checked.

Collapse watch: a large beta can drive every z to the mode (AUROC 0.5). The median over
dimensions of the batch standard deviation of z is tracked (buffers ``z_std_initial``,
``z_std_peak``, ``z_std_last``), and so is a running mean of the InfoNCE bound. When the spread
falls below ``collapse_ratio`` x its peak or below ``collapse_abs``, or the bound stays below
``collapse_mi`` x log K (z does not tell images apart) while the spread shrinks to half its peak, a
``CollapseWarning`` is raised once and the buffer ``collapsed`` is set.

Views (what makes a positive pair). A training batch of plain (B, C, H, W) images gets two
independent augmentations of each image (``augment``, a named set of
``darklens.data.transforms``). A batch whose channels stack V > 1 renderings of each lens
(``darklens.simulate.views.render_views``: the same lens, independent noise draws) pairs two
different renderings instead (each then augmented; ``augment="none"`` is best there); the
memory bank and all scores use the first rendering. Measured on the ``demo`` preset (1000
no_sub training images, 8 epochs, a development train/test pair with seeds kept apart from the
benchmark's), kNN-score AUROC: augment ``full`` 0.69, ``dihedral`` 0.62, ``none`` 0.59,
``noise`` 0.88 (0.92 at temperature 0.1), native views x4 0.94-0.96. Views of one noisy image
share its noise field, so InfoNCE can tell images apart by their noise and the features carry
little about the lens; fresh noise in the positive (redrawn by the simulator, or at least
added) removes that shortcut. Geometric augmentations did not help on these data.

Defaults: ``augment="noise"`` (extra noise of up to one noise sigma, no geometry) for single
images, temperature 0.1 (native views: 0.05 0.94, 0.1 0.94, 0.2 0.94, 0.5 0.88; single
images with ``noise``: 0.1 0.92 against 0.2 0.88), ``score="auto"``
(the label-free choice, which picks ``knn`` on backbone features in every run measured).
``bank_dihedral=True`` (see ``fit_end``). On the development set ``beta`` in [0, 0.1] moved
the kNN AUROC by less than 0.01 (cosine critic on the projection: the penalty only shapes the
norm of p); ``entropy_on="backbone"`` with beta = 1 gave 0.90 against 0.92 over three seeds
(single images) but makes the ``norm`` score useful (0.88-0.90 against 0.65-0.75), and that
is the configuration the semi-supervised term builds on. Benchmark tables (test sets never
used for these choices): ``benchmarks/results/infotheoretic-demo*.json``.

Semi-supervised form: with labelled anomalies (``set_labelled_anomalies`` or a batch dict with
``"anomalies"``), the loss adds ``eta * mean -log(1 - exp(-R(z_a)))`` (``semi_form="logexp"``,
see ``losses.anomaly_push_loss`` for why; Deep SAD's ``1/(R + eps)`` is ``"inverse"``). This is
a Deep-SAD-like substitute, not the seed's third term: that term,
E_{p_n(X)} E_{p_n(Z|X)}[-log p_a(Z|X)], needs a model of the anomalies' conditional density
p_a(Z|X), which we do not have; we read exp(-R(z)) as the probability that z is normal and
push labelled anomalies out of it. losses.csv records it as ``semi_term``.

Hybrids (the proposal's "objective applied to other architectures"): ``center=True`` puts the
reference mode at the mean feature of the initial network (Deep SVDD's centre; score = squared
distance to it), and ``recon_weight > 0`` adds a decoder and a reconstruction loss on h (an
autoencoder trained with the information-theoretic objective as regulariser).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.data.lensdata import LensData
from darklens.data.transforms import AUGMENTATION_SETS, local_patch_swap, make_augment
from darklens.errors import DataError
from darklens.models.base import Detector, register_detector
from darklens.models.critics import CRITICS, ProjectionHead, couples_to_norm, make_critic
from darklens.models.encoders import SmallCNN, SpatialCNN
from darklens.models.losses import PENALTIES, SEMI_FORMS, anomaly_push_loss, entropy_penalty
from darklens.models.losses import infonce_loss as _infonce

SCORES: tuple[str, ...] = ("norm", "neg_norm", "knn", "critic")
# Backbones: SmallCNN (strided convolutions, global average pooling) or the position-aware
# SpatialCNN (coordinate channels, no pooling, patch-level score ``patch_knn``).
ENCODERS: tuple[str, ...] = ("pooled", "spatial")
# The eight right-angle turns and flips, as (quarter turns, mirror first): identity first.
_DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


class CollapseWarning(UserWarning):
    """The representation z has collapsed to (almost) a point."""


def _auroc(normal: Tensor, anomalous: Tensor) -> float:
    """AUROC of separating two score samples (Mann-Whitney; ties count one half; NaN -> 0.5)."""
    if torch.isnan(normal).any() or torch.isnan(anomalous).any():
        return 0.5
    diff = anomalous.double()[:, None] - normal.double()[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (0 when either is constant)."""
    ra = a.double().argsort().argsort().double()
    rb = b.double().argsort().argsort().double()
    if a.double().std() == 0 or b.double().std() == 0:
        return 0.0
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


class _Decoder(nn.Module):
    """Small upsampling decoder for the autoencoder hybrid: h -> (B, C, H, W)."""

    def __init__(self, feat_dim: int, image_size: int, channels: int, width: int, depth: int):
        super().__init__()
        self.side = max(1, math.ceil(image_size / 2**depth))
        self.image_size = image_size
        ch = width * 2 ** (depth - 1)
        self.ch = ch
        self.fc = nn.Linear(feat_dim, ch * self.side**2)
        layers: list[nn.Module] = []
        for i in range(depth - 1, -1, -1):
            out = width * 2 ** max(i - 1, 0)
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(ch, out, 3, padding=1),
                       nn.LeakyReLU(0.1)]
            ch = out
        layers.append(nn.Conv2d(ch, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        x = self.net(self.fc(h).reshape(-1, self.ch, self.side, self.side))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
        return x


@register_detector
class InfoTheoretic(Detector):
    """Contrastive encoder with an entropy penalty; scores by norm, kNN or critic density."""

    name = "infotheoretic"
    # Trains on stacked simulator-native views (``darklens train --views native``).
    accepts_native_views: ClassVar[bool] = True
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3, "weight_decay": 1e-5, "scheduler": "cosine", "batch_size": 128,
        "epochs": 30,
    }

    def __init__(
        self,
        image_size: int = 64,
        in_channels: int = 1,
        width: int = 16,
        depth: int = 4,
        feat_dim: int = 128,
        proj_dim: int = 64,
        beta: float = 1e-2,
        penalty: str = "l2",
        critic: str = "cosine",
        temperature: float = 0.1,
        critic_hidden: int = 64,
        entropy_on: str = "projection",
        normalize: bool = True,
        augment: str = "noise",
        score: str = "auto",
        knn_k: int = 5,
        knn_space: str = "backbone",
        bank_size: int = 4096,
        bank_dihedral: bool = True,
        encoder: str = "pooled",
        patch_dim: int = 32,
        patch_bank_size: int = 4096,
        select_images: int = 512,
        eta: float = 1.0,
        semi_form: str = "logexp",
        anomaly_batch: int = 32,
        center: bool = False,
        recon_weight: float = 0.0,
        collapse_ratio: float = 1e-3,
        collapse_abs: float = 1e-6,
        collapse_mi: float = 0.02,
        seed: int = 0,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__(**config)
        if penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
        if critic not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {critic!r}")
        if entropy_on not in ("projection", "backbone"):
            raise ValueError(f"entropy_on must be 'projection' or 'backbone', got {entropy_on!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if knn_space not in ("projection", "backbone"):
            raise ValueError(f"knn_space must be 'projection' or 'backbone', got {knn_space!r}")
        if augment not in AUGMENTATION_SETS:
            raise ValueError(f"augment must be one of {sorted(AUGMENTATION_SETS)}, got {augment!r}")
        if semi_form not in SEMI_FORMS:
            raise ValueError(f"semi_form must be one of {SEMI_FORMS}, got {semi_form!r}")
        names = self.score_names()
        if score != "auto" and score not in names:
            raise ValueError(f"score must be 'auto' or one of {names}, got {score!r}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")

        with torch.random.fork_rng(devices=[]):  # initial weights drawn from the config seed
            torch.manual_seed(int(seed))
            self.backbone: nn.Module = (
                SpatialCNN(in_channels, width, depth, feat_dim, image_size, patch_dim)
                if encoder == "spatial" else SmallCNN(in_channels, width, depth, feat_dim))
            self.head = ProjectionHead(feat_dim, proj_dim, hidden=feat_dim)
            self.critic = make_critic(critic, proj_dim, temperature=temperature,
                                      normalize=normalize, hidden=critic_hidden)
            self.decoder = (_Decoder(feat_dim, image_size, in_channels, width, depth)
                            if recon_weight > 0 else None)
        self.augment = make_augment(augment)
        z_dim = proj_dim if entropy_on == "projection" else feat_dim
        self._gen = torch.Generator().manual_seed(int(seed))
        # Augmentation RNG state travels with the weights, so a resumed run draws the same views.
        self.register_buffer("aug_rng_state", self._gen.get_state())
        self.register_buffer("center_vec", torch.zeros(z_dim))
        self.register_buffer("bank_backbone", torch.zeros(0, feat_dim))
        self.register_buffer("bank_projection", torch.zeros(0, proj_dim))
        self.register_buffer("bank_patches", torch.zeros(0, 0, patch_dim))  # (N, s*s, patch_dim)
        self.register_buffer("selected_score", torch.tensor(-1))  # index into score_names()
        self.register_buffer("selection_values", torch.full((len(names),), float("nan")))
        self.register_buffer("consistency_values", torch.full((len(names),), float("nan")))
        self.register_buffer("z_std_initial", torch.tensor(float("nan")))
        self.register_buffer("z_std_last", torch.tensor(float("nan")))
        self.register_buffer("z_std_peak", torch.tensor(0.0))
        self.register_buffer("mi_ema", torch.tensor(float("nan")))
        self.register_buffer("steps", torch.tensor(0))
        self.register_buffer("collapsed", torch.tensor(False))
        self.register_buffer("labelled", torch.zeros(0), persistent=False)
        self.register_buffer("pseudo", torch.zeros(0), persistent=False)
        self.register_buffer("patch_swap_values", torch.full((len(names),), float("nan")))
        self._warned = False
        self._term_sums: dict[str, float] = {}
        self._term_count = 0

    # ----------------------------------------------------------------- representation
    def score_names(self) -> list[str]:
        """Every score this configuration can give, in a fixed order."""
        return (list(SCORES) + (["patch_knn"] if self.config["encoder"] == "spatial" else [])
                + (["recon"] if self.config["recon_weight"] > 0 else []))

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone features h (B, feat_dim) and projections p (B, proj_dim)."""
        h = self.backbone(images)
        return h, self.head(h)

    def _encode_maps(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """h, p and, for the spatial encoder, the patch map (B, patch_dim, s, s) (else None)."""
        if not isinstance(self.backbone, SpatialCNN):
            return (*self.encode(images), None)
        maps = self.backbone.patch_map(images)
        h = self.backbone.latent(maps)
        return h, self.head(h), maps

    def _z(self, h: Tensor, p: Tensor) -> Tensor:
        """The representation the entropy term acts on, relative to the reference mode."""
        z = p if self.config["entropy_on"] == "projection" else h
        return z - self.center_vec if self.config["center"] else z

    def penalty(self, z: Tensor) -> Tensor:
        """R(z) per sample for the configured reference (l2: normal, l1: Laplace)."""
        return entropy_penalty(z, self.config["penalty"])

    def set_labelled_anomalies(self, images: Tensor | None) -> None:
        """Labelled anomalous images (N, C, H, W) for the semi-supervised term (None: clear).

        Kept in a non-persistent buffer: they are training data, not part of the model.
        """
        self.labelled = self._image_buffer(images, "labelled anomalies")

    def set_pseudo_anomalies(self, images: Tensor | None) -> None:
        """Pseudo-anomalies (N, C, H, W) for the label-free choice of score (None: clear).

        E.g. validation normals re-rendered with random perturbers
        (``darklens.simulate.pseudo.perturbed_normals``); without them the choice uses local
        patch swaps of the validation images. Not saved with the model.
        """
        self.pseudo = self._image_buffer(images, "pseudo-anomalies")

    def _image_buffer(self, images: Tensor | None, what: str) -> Tensor:
        """``images`` (N, C, H, W) as float32 on the model's device; empty for None."""
        if images is None or images.numel() == 0:
            return torch.zeros(0, device=self.center_vec.device)
        if images.dim() != 4:
            raise ValueError(f"{what} must be (N, C, H, W), got {tuple(images.shape)}")
        return images.detach().to(self.center_vec.device, torch.float32)

    # ----------------------------------------------------------------- training
    def _contrastive_terms(
        self, images: Tensor, generator: torch.Generator, anomalies: Tensor | None = None
    ) -> dict[str, Tensor]:
        v1, v2 = self._two_views(images, generator)
        k = images.shape[0]
        parts = [v1, v2]
        if anomalies is not None:
            parts.append(self.augment(self._first_view(anomalies), generator))
        h, p = self.encode(torch.cat(parts))  # one pass: BatchNorm sees every view together
        scores = self.critic(p[:k], p[k:2 * k])
        z = self._z(h, p)
        terms = {
            "infonce": _infonce(scores),
            "entropy": self.penalty(z[:2 * k]).mean(),
            "z": z[:2 * k],
        }
        if anomalies is not None:
            terms["anomaly"] = anomaly_push_loss(self.penalty(z[2 * k:]),
                                                 self.config["semi_form"]).mean()
        if self.decoder is not None:
            terms["recon"] = F.mse_loss(self.decoder(h[:2 * k]), torch.cat([v1, v2]))
        return terms

    def _first_view(self, images: Tensor) -> Tensor:
        """The first rendering of stacked simulator-native views (or the images themselves)."""
        c = int(self.config["in_channels"])
        return images[:, :c] if images.shape[1] > c else images

    def _two_views(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Two views of every image: two augmentations of it, or, when the batch stacks
        ``V > 1`` simulator-native renderings along the channels (``darklens.simulate.views``),
        two different renderings picked at random, each then augmented."""
        c = int(self.config["in_channels"])
        if images.shape[1] == c:
            return self.augment(images, generator), self.augment(images, generator)
        b, cv, h, w = images.shape
        if cv % c:
            raise ValueError(f"infotheoretic: {cv} channels is not a stack of {c}-channel views")
        n_views = cv // c
        stack = images.reshape(b, n_views, c, h, w)
        first = torch.randint(0, n_views, (b,), generator=generator)
        second = (first + torch.randint(1, n_views, (b,), generator=generator)) % n_views
        rows = torch.arange(b, device=images.device)
        v1 = stack[rows, first.to(images.device)]
        v2 = stack[rows, second.to(images.device)]
        return self.augment(v1, generator), self.augment(v2, generator)

    def _combine(self, terms: dict[str, Tensor]) -> Tensor:
        loss = terms["infonce"] + self.config["beta"] * terms["entropy"]
        if "anomaly" in terms:
            loss = loss + self.config["eta"] * terms["anomaly"]
        if "recon" in terms:
            loss = loss + self.config["recon_weight"] * terms["recon"]
        return loss

    def _sample_anomalies(self, batch_anomalies: Tensor | None) -> Tensor | None:
        if batch_anomalies is not None:
            return batch_anomalies
        n = self.labelled.shape[0] if self.labelled.dim() == 4 else 0
        if n == 0 or self.config["eta"] <= 0:
            return None
        m = min(n, int(self.config["anomaly_batch"]))
        idx = torch.randperm(n, generator=self._gen)[:m].to(self.labelled.device)
        return self.labelled[idx]

    @staticmethod
    def _unpack(batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, dict):
            return batch["images"], batch.get("anomalies")
        if isinstance(batch, (list, tuple)):
            return batch[0], None
        return batch, None

    def training_loss(self, batch: Any) -> Tensor:
        """Loss on a batch of plain normal images; the two views are drawn here."""
        images, anomalies = self._unpack(batch)
        self._gen.set_state(self.aug_rng_state.cpu())
        anomalies = self._sample_anomalies(anomalies)
        terms = self._contrastive_terms(images, self._gen, anomalies)
        self.aug_rng_state.copy_(self._gen.get_state())
        self._watch_collapse(terms["z"].detach(), -terms["infonce"].detach(), images.shape[0])
        self._record_terms(terms)
        return self._combine(terms)

    def _record_terms(self, terms: dict[str, Tensor]) -> None:
        """Add this batch's terms to the running sums that ``epoch_terms`` reports."""
        names = {"infonce": "infonce_bound", "entropy": "entropy_bound", "anomaly": "semi_term",
                 "recon": "recon_term"}
        for key, col in names.items():
            if key in terms:
                value = float(terms[key].detach())
                self._term_sums[col] = self._term_sums.get(col, 0.0) + (
                    -value if key == "infonce" else value)
        self._term_count += 1

    def epoch_terms(self) -> dict[str, float]:
        """Mean InfoNCE bound on I(X, Z) (nats), entropy bound R(z) and the optional
        semi-supervised and reconstruction terms since the last call (unweighted), then reset."""
        out = {k: v / max(self._term_count, 1) for k, v in self._term_sums.items()}
        self._term_sums, self._term_count = {}, 0
        return out

    @torch.no_grad()
    def validation_loss(self, batch: Any) -> Tensor:
        """The unsupervised loss on fixed-seed views: deterministic, for early stopping."""
        images, _ = self._unpack(batch)
        gen = torch.Generator().manual_seed(int(self.config["seed"]) + 7919)
        terms = self._contrastive_terms(images, gen)
        terms.pop("anomaly", None)
        return self._combine(terms)

    def _watch_collapse(self, z: Tensor, mi: Tensor | None = None, k: int = 0) -> None:
        """Track the spread of z and the InfoNCE bound; flag and warn once on collapse.

        Collapse: the median per-dimension std of z falls below ``collapse_ratio`` x its peak
        or below ``collapse_abs``; or, after 10 steps, the running mean of the InfoNCE bound is
        below ``collapse_mi`` x log K (z does not tell the images of a batch apart) while the
        spread has fallen below half its peak (z is being pulled to the mode). The second
        condition keeps an early network that has not learned anything yet from being flagged.
        """
        if z.shape[0] < 2:
            return
        spread = z.std(dim=0).median()
        if torch.isnan(self.z_std_initial):
            self.z_std_initial.copy_(spread)
        self.z_std_peak.copy_(torch.maximum(self.z_std_peak, spread))
        self.z_std_last.copy_(spread)
        reason = None
        if spread < self.config["collapse_abs"] or spread < (
                self.config["collapse_ratio"] * self.z_std_peak):
            reason = (f"median per-dimension std of z {float(spread):.3g} (first "
                      f"{float(self.z_std_initial):.3g}, peak {float(self.z_std_peak):.3g})")
        if mi is not None and k > 1:
            self.steps += 1
            ema = mi if torch.isnan(self.mi_ema) else 0.9 * self.mi_ema + 0.1 * mi
            self.mi_ema.copy_(ema)
            floor = self.config["collapse_mi"] * math.log(k)
            if int(self.steps) >= 10 and ema < floor and spread < 0.5 * self.z_std_peak:
                reason = (f"InfoNCE bound {float(ema):.3g} nats, under "
                          f"{self.config['collapse_mi']} x log K = "
                          f"{self.config['collapse_mi'] * math.log(k):.3g}")
        if reason is not None:
            self.collapsed.fill_(True)
        if bool(self.collapsed) and not self._warned:
            self._warned = True
            warnings.warn(
                f"infotheoretic: representation collapsed ({reason or 'flagged earlier'}); "
                f"beta={self.config['beta']} is probably too large",
                CollapseWarning, stacklevel=2)

    def diagnostics(self) -> dict[str, Any]:
        """Collapse watch and score selection, JSON-able (for logs and benchmark tables)."""
        names = self.score_names()
        sel = int(self.selected_score)
        return {
            "z_std_initial": float(self.z_std_initial),
            "z_std_last": float(self.z_std_last),
            "z_std_peak": float(self.z_std_peak),
            "mi_bound_running": float(self.mi_ema),
            "collapsed": bool(self.collapsed),
            "selected_score": names[sel] if sel >= 0 else None,
            "pseudo_auroc": {n: float(v) for n, v in zip(names, self.selection_values,
                                                        strict=True)},
            "view_consistency": {n: float(v) for n, v in zip(names, self.consistency_values,
                                                            strict=True)},
            "patch_swap_auroc": {n: float(v) for n, v in zip(names, self.patch_swap_values,
                                                            strict=True)},
            "pseudo_kind": "physical" if self.pseudo.dim() == 4 and self.pseudo.shape[0] else
            "patch_swap",
            "bank_size": int(self.bank_backbone.shape[0]),
            "entropy_coupled": self.entropy_coupled,
        }

    @property
    def entropy_coupled(self) -> bool:
        """Whether beta trades anything: the entropy bound acts on the z that a scale-aware
        critic scores (``critic="dot"``, ``entropy_on="projection"``). Otherwise R only shapes
        a norm that InfoNCE never sees (the seed's default form, kept for comparison)."""
        return couples_to_norm(self.config["critic"]) and \
            self.config["entropy_on"] == "projection"

    # ----------------------------------------------------------------- hooks
    @torch.no_grad()
    def fit_start(self, loader: Iterable) -> None:
        """With ``center=True``: the reference mode is the mean z of the initial network."""
        if not self.config["center"]:
            return
        was_training = self.training
        self.eval()
        total, n = torch.zeros_like(self.center_vec), 0
        for images in _take(loader, int(self.config["bank_size"])):
            h, p = self.encode(self._first_view(images))
            total += (p if self.config["entropy_on"] == "projection" else h).sum(0)
            n += images.shape[0]
        if n:
            self.center_vec.copy_(total / n)
        self.train(was_training)

    @torch.no_grad()
    def fit_end(self, loader: Iterable, val_loader: Iterable | None = None) -> None:
        """After training: build the memory bank and pick the default score, label-free.

        The bank holds the features of up to ``bank_size`` training images and, with
        ``bank_dihedral``, of their seven other right-angle turns and flips (exact pixel moves;
        lenses are rotation-invariant in distribution, so these are normal images too, and a
        denser bank gives closer neighbours: demo development set, kNN AUROC 0.92 -> 0.94 on
        single images, 0.94 -> 0.97 with native views). The score is chosen on up to
        ``select_images`` normal validation images; without a validation loader, every fifth
        training image (with its turns) is held out of the bank for the choice and put back
        afterwards.
        """
        was_training = self.training
        self.eval()
        cap = int(self.config["bank_size"])
        n_sel = int(self.config["select_images"])
        transforms = _DIHEDRAL if self.config["bank_dihedral"] else _DIHEDRAL[:1]
        hs: list[list[Tensor]] = [[] for _ in transforms]
        ps: list[list[Tensor]] = [[] for _ in transforms]
        ms: list[list[Tensor]] = [[] for _ in transforms]
        held, seen = [], 0
        for images in _take(loader, cap):
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
            sel_images = self._first_view(torch.cat(list(_take(val_loader, n_sel)))[:n_sel])
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
        self._check_bank_collapse()
        self.train(was_training)

    def _check_bank_collapse(self) -> None:
        z = self._z(self.bank_backbone, self.bank_projection)
        if z.shape[0] < 2:
            return
        spread = z.std(dim=0).median()
        if spread < self.config["collapse_abs"] or (
                not torch.isnan(self.z_std_initial)
                and spread < self.config["collapse_ratio"] * self.z_std_initial):
            self.collapsed.fill_(True)
            self._watch_collapse(z)

    @torch.no_grad()
    def select_score(self, images: Tensor) -> dict[str, dict[str, float]]:
        """Label-free choice of the default score on normal images (see the module docstring).

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
        swap_auroc = torch.tensor([_auroc(normal[n], swapped[n]) for n in names])
        if self.pseudo.dim() == 4 and self.pseudo.shape[0] > 0:
            pseudo = self.score_all(self.pseudo)
            auroc = torch.tensor([_auroc(normal[n], pseudo[n]) for n in names])
        else:
            auroc = swap_auroc
        self.patch_swap_values.copy_(swap_auroc)
        consistency = torch.tensor([spearman(a[n], b[n]) for n in names])
        self.selection_values.copy_(auroc)
        self.consistency_values.copy_(consistency)
        best = max(range(len(names)), key=lambda i: (round(float(auroc[i]), 2),
                                                     round(float(consistency[i]), 6), -i))
        self.selected_score.fill_(best)
        return {n: {"pseudo_auroc": float(auroc[i]), "patch_swap_auroc": float(swap_auroc[i]),
                    "view_consistency": float(consistency[i])} for i, n in enumerate(names)}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # The bank's size depends on the training set: take the saved shapes.
        for name in ("bank_backbone", "bank_projection", "bank_patches"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        # Buffers added after a model was saved keep their initial values (older runs load).
        for name in ("bank_patches", "patch_swap_values"):
            state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._warned = False

    # ----------------------------------------------------------------- scores
    @property
    def default_score(self) -> str:
        """The configured score, or the label-free choice (``norm`` before ``fit_end``)."""
        if self.config["score"] != "auto":
            return self.config["score"]
        sel = int(self.selected_score)
        return self.score_names()[sel] if sel >= 0 else "norm"

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

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        name = self.default_score
        if name in ("knn", "critic") and self.bank_backbone.shape[0] == 0:
            raise RuntimeError(f"infotheoretic: score {name!r} needs the memory bank; "
                               "call fit_end(train_loader) after training")
        return self.score_all(images)[name]


def select_labelled(data: LensData, n_per_class: int, seed: int = 0,
                    normal: str = "no_sub") -> Tensor:
    """Up to ``n_per_class`` images of every anomaly class in ``data`` (fixed-seed subset).

    For ``darklens train --detector infotheoretic --labelled-anomalies DIR --n-labelled N``:
    the result goes to ``InfoTheoretic.set_labelled_anomalies``.
    """
    if n_per_class < 1:
        raise DataError(f"--n-labelled must be at least 1, got {n_per_class}")
    gen = np.random.default_rng(seed)
    picks = []
    for cid, name in enumerate(data.class_names):
        idx = np.flatnonzero(data.labels == cid)
        if name == normal or idx.size == 0:
            continue
        picks.append(gen.permutation(idx)[:n_per_class])
    if not picks:
        raise DataError(f"no labelled anomalies (classes other than {normal!r}) in the data")
    return torch.as_tensor(data.images[np.sort(np.concatenate(picks))], dtype=torch.float32)


def _take(loader: Iterable, limit: int) -> Iterator[Tensor]:
    """Image tensors from a loader (images or (images, labels) batches), up to ``limit``."""
    n = 0
    for batch in loader:
        if n >= limit:
            return
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        yield images
        n += images.shape[0]
