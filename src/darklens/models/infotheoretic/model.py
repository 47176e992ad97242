"""The infotheoretic detector's model and loss: max I_n(X, Z) - beta H_n(Z), the project's own
method (design, options and measurements: docs/infotheoretic.md).

Per batch of K normal images the loss is ``infonce(f(z_i, zbar_j)) + beta * mean_i R(z_i)``
(``darklens.models.losses``), with two views of each image (augmentations, or two
simulator-native renderings stacked along the channels) and a critic f
(``darklens.models.critics``); optional terms: labelled anomalies pushed out (``eta``) and a
reconstruction (``recon_weight``). The other rooms are mixins of ``InfoTheoretic``: the memory
bank and its scores (``bank.py``), the label-free score choice (``selection.py``), the collapse
watch (``collapse.py``) and the anomaly inputs (``anomalies.py``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.data.transforms import AUGMENTATION_SETS, make_augment
from darklens.models.base import Detector, register_detector
from darklens.models.critics import CRITICS, ProjectionHead, couples_to_norm, make_critic
from darklens.models.encoders import SmallCNN, SpatialCNN
from darklens.models.infotheoretic.anomalies import AnomalyInputs
from darklens.models.infotheoretic.bank import MemoryBank, take
from darklens.models.infotheoretic.collapse import CollapseWatch
from darklens.models.infotheoretic.selection import ScoreSelection
from darklens.models.losses import PENALTIES, SEMI_FORMS, anomaly_push_loss, entropy_penalty
from darklens.models.losses import infonce_loss as _infonce

SCORES: tuple[str, ...] = ("norm", "neg_norm", "knn", "critic")
# Backbones: SmallCNN (strided convolutions, global average pooling) or the position-aware
# SpatialCNN (coordinate channels, no pooling, patch-level score ``patch_knn``).
ENCODERS: tuple[str, ...] = ("pooled", "spatial")
# Which epoch's weights to keep: the lowest validation loss, or the highest pseudo-AUROC of the
# chosen score (the label-free choice, after every epoch); "auto": pseudo where physical
# pseudo-anomalies were given (``set_pseudo_anomalies``), else the validation loss.
EPOCH_CHOICES: tuple[str, ...] = ("auto", "validation", "pseudo")


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
class InfoTheoretic(MemoryBank, ScoreSelection, CollapseWatch, AnomalyInputs, Detector):
    """Contrastive encoder with an entropy penalty; scores by norm, kNN or critic density."""

    name = "infotheoretic"
    representation = "backbone features"
    # Trains on stacked simulator-native views (``darklens train --views native``).
    accepts_native_views: ClassVar[bool] = True
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3, "weight_decay": 1e-5, "scheduler": "cosine", "batch_size": 128,
        "epochs": 30,
    }
    # On residual maps (``darklens train --input residual``) a normal map is white noise, so
    # InfoNCE alone learns to recognise noise fields (model-a64: AUROC 0.52). There the
    # entropy bound acts on the backbone features with beta = 1, the semi-supervised term
    # pushes out the pseudo-anomalies the train command makes from each training normal's own
    # fit (darklens.fit.pseudo_anomalies), and the norm score R(z) is what the label-free
    # choice picks (docs/infotheoretic.md, "On residual maps").
    residual_defaults: ClassVar[dict[str, Any]] = {"entropy_on": "backbone", "beta": 1.0}

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
        normalise: bool = True,
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
        epoch_choice: str = "auto",
        seed: int = 0,
        normalize: bool | None = None,
    ) -> None:
        config = {k: v for k, v in locals().items()
                  if k not in ("self", "__class__", "normalize")}
        if normalize is not None:  # the old spelling, kept so that older runs and configs load
            warnings.warn("infotheoretic: option 'normalize' is deprecated; use 'normalise'",
                          DeprecationWarning, stacklevel=2)
            config["normalise"] = normalise = bool(normalize)
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
        if epoch_choice not in EPOCH_CHOICES:
            raise ValueError(f"epoch_choice must be one of {EPOCH_CHOICES}, got {epoch_choice!r}")

        with torch.random.fork_rng(devices=[]):  # initial weights drawn from the config seed
            torch.manual_seed(int(seed))
            self.backbone: nn.Module = (
                SpatialCNN(in_channels, width, depth, feat_dim, image_size, patch_dim)
                if encoder == "spatial" else SmallCNN(in_channels, width, depth, feat_dim))
            self.head = ProjectionHead(feat_dim, proj_dim, hidden=feat_dim)
            self.critic = make_critic(critic, proj_dim, temperature=temperature,
                                      normalise=normalise, hidden=critic_hidden)
            self.decoder = (_Decoder(feat_dim, image_size, in_channels, width, depth)
                            if recon_weight > 0 else None)
        self.augment = make_augment(augment)
        z_dim = proj_dim if entropy_on == "projection" else feat_dim
        self._gen = torch.Generator().manual_seed(int(seed))
        # Augmentation RNG state travels with the weights, so a resumed run draws the same views.
        self.register_buffer("aug_rng_state", self._gen.get_state())
        self.register_buffer("center_vec", torch.zeros(z_dim))
        self._init_bank(feat_dim, proj_dim, patch_dim)
        self._init_selection(len(names))
        self._init_collapse_watch()
        self._init_anomaly_inputs()
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

    def embed(self, images: Tensor) -> Tensor:
        """Features for the report's representation map: the backbone features h."""
        return self.encode(images)[0]

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

    def diagnostics(self) -> dict[str, Any]:
        """Collapse watch and score selection, JSON-able (for logs and benchmark tables)."""
        return {**self.collapse_diagnostics(), **self.selection_diagnostics(),
                "bank_size": int(self.bank_backbone.shape[0]),
                "entropy_coupled": self.entropy_coupled}

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
        for images in take(loader, int(self.config["bank_size"])):
            h, p = self.encode(self._first_view(images))
            total += (p if self.config["entropy_on"] == "projection" else h).sum(0)
            n += images.shape[0]
        if n:
            self.center_vec.copy_(total / n)
        self.train(was_training)

    @torch.no_grad()
    def selection_loss(self, loader: Iterable, val_loader: Iterable | None = None
                       ) -> float | None:
        """Minus the pseudo-AUROC of the label-free choice of score after this epoch (memory
        bank rebuilt, score chosen as in ``fit_end``), so that the training loop keeps the
        epoch whose weights separate pseudo-anomalies best; None where ``epoch_choice`` leaves
        the choice to the validation loss.

        Why: the InfoNCE bound keeps rising long after the representation stops helping
        detection (on model-ii the kNN AUROC peaks after one epoch and decays), and the
        pseudo-AUROC on physical perturbers follows the test AUROC over epochs
        (docs/infotheoretic.md).
        """
        choice = self.config["epoch_choice"]
        physical = self.pseudo.dim() == 4 and self.pseudo.shape[0] > 0
        if choice == "validation" or (choice == "auto" and not physical):
            return None
        self.fit_end(loader, val_loader)
        return -float(self.selection_values[self.score_names().index(self.default_score)])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        self._take_bank_shapes(state_dict, prefix)
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
    def score(self, images: Tensor) -> Tensor:
        name = self.default_score
        if name in ("knn", "critic") and self.bank_backbone.shape[0] == 0:
            raise RuntimeError(f"infotheoretic: score {name!r} needs the memory bank; "
                               "call fit_end(train_loader) after training")
        return self.score_all(images)[name]
