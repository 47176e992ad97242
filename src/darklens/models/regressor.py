"""ResNet regressors with a posterior head, deep ensembles and dihedral TTA.

A ``Regressor`` maps images (B, 1, H, W) to a posterior per image over its targets: by default
a mean and a log-variance per target (Gaussian), or a binned or flow posterior
(``darklens.models.posterior_heads``, bounded by each target's ``support``). It works in
*standardised* target units internally ((y - mean) / std, fitted on the training set and stored
in the model's buffers, so a saved state_dict carries them) and ``predict`` returns means and
variances in physical units.

Layouts (``arch``), all written from ``torch.nn`` (no torchvision, no downloaded weights):

- ``small``: 3x3 stem (16 channels) at full resolution, then three stages of one basic block
  at 16, 32, 64 channels, each halving the resolution (64 -> 8 pixels); about 80 k
  parameters; trains on 2 CPU cores.
- ``resnet18`` / ``resnet34``: the He et al. (2016) basic-block layouts ([2,2,2,2] and
  [3,4,6,3] blocks at 64-512 channels) with a 3x3 stride-1 stem and no max-pool, the usual choice
  for small (64x64) images; meant for a GPU.

Uncertainty:

- ``gaussian_nll``: 0.5 * (log sigma^2 + (y - mu)^2 / sigma^2 + log 2 pi), averaged; with
  ``beta > 0`` the beta-NLL of Seitzer et al. (2022) (each term weighted by the detached
  sigma^(2 beta)), which keeps the mean fit from stalling on hard examples.
- ``mixture``: a deep ensemble (or the 8 test-time views) combined as an equal-weight Gaussian
  mixture: mean = average of means, variance = average of variances + variance of the means
  (aleatoric + epistemic).
- ``predict_tta``: the model applied to the 8 dihedral transforms of each image (4 rotations by
  90 degrees, each with and without a flip), combined with ``mixture``. The 8 views are not
  independent measurements, so their variances are averaged, never divided by 8.
- ``predict_posterior``: any head; members x views as one equal-weight mixture: its moments,
  draws taken equally from every component, and its marginal densities on grids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.models.posterior_heads import (
    POSTERIORS,
    Component,
    gaussian_nll,
    make_head,
)

ARCHS: dict[str, dict[str, Any]] = {
    "small": {"widths": (16, 32, 64), "blocks": (1, 1, 1), "strides": (2, 2, 2)},
    "resnet18": {"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2), "strides": (1, 2, 2, 2)},
    "resnet34": {"widths": (64, 128, 256, 512), "blocks": (3, 4, 6, 3), "strides": (1, 2, 2, 2)},
}


def make_norm(kind: str, channels: int) -> nn.Module:
    """``batch``: BatchNorm2d; ``group``: GroupNorm with 8 channels per group (no running
    statistics, so training and evaluation behave alike, whatever the batch size)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    raise ValueError(f"unknown norm {kind!r}; use batch or group")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with normalisation and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, norm: str = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          make_norm(norm, c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """Stem + stages of basic blocks + global average pooling -> (B, widths[-1])."""

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], strides: Sequence[int],
                 in_channels: int = 1, norm: str = "batch") -> None:
        super().__init__()
        if not widths or not len(widths) == len(blocks) == len(strides):
            raise ValueError("widths, blocks and strides must be non-empty and of equal length")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  make_norm(norm, widths[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c = widths[0]
        for w, n, s in zip(widths, blocks, strides, strict=True):
            for j in range(n):
                layers.append(BasicBlock(c, w, stride=s if j == 0 else 1, norm=norm))
                c = w
        self.stages = nn.Sequential(*layers)
        self.out_features = c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class Regressor(nn.Module):
    """ResNet + a posterior head for ``targets`` (see the module docstring).

    ``posterior``: ``gaussian`` (default), ``binned`` or ``flow``
    (``darklens.models.posterior_heads``); ``support``: each target's [low, high] in
    physical units (the training prior's range), required by ``binned`` and ``flow``.
    """

    def __init__(self, targets: Sequence[str], arch: str = "small", in_channels: int = 1,
                 dropout: float = 0.0, widths: Sequence[int] | None = None,
                 blocks: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, norm: str = "batch",
                 posterior: str = "gaussian", n_bins: int = 40,
                 support: Sequence[Sequence[float]] | None = None) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; use one of {', '.join(ARCHS)}")
        if not targets:
            raise ValueError("a regressor needs at least one target")
        if posterior not in POSTERIORS:
            raise ValueError(f"unknown posterior {posterior!r}; use one of "
                             f"{', '.join(POSTERIORS)}")
        if support is not None:
            support = [[float(lo), float(hi)] for lo, hi in support]
            if len(support) != len(targets) or not all(
                    math.isfinite(lo) and math.isfinite(hi) and hi > lo for lo, hi in support):
                raise ValueError("support needs a finite [low, high] with high > low per target")
        elif posterior != "gaussian":
            raise ValueError(f"a {posterior} posterior needs each target's support")
        layout = ARCHS[arch]
        widths = tuple(widths or layout["widths"])
        blocks = tuple(blocks or layout["blocks"])
        strides = tuple(strides or layout["strides"])
        self.targets = tuple(targets)
        self.posterior = posterior
        self.config = {"targets": list(self.targets), "arch": arch, "in_channels": in_channels,
                       "dropout": dropout, "widths": list(widths), "blocks": list(blocks),
                       "strides": list(strides), "norm": norm}
        if posterior != "gaussian" or support is not None:  # older runs: keys absent
            self.config.update({"posterior": posterior, "n_bins": n_bins, "support": support})
        self.support = support
        self.backbone = ResNetBackbone(widths, blocks, strides, in_channels, norm)
        t = len(self.targets)
        self.head = make_head(posterior, self.backbone.out_features, t, n_bins, dropout)
        self.register_buffer("target_mean", torch.zeros(t, dtype=torch.float64))
        self.register_buffer("target_std", torch.ones(t, dtype=torch.float64))

    def set_standardisation(self, mean: Tensor | Sequence[float],
                            std: Tensor | Sequence[float]) -> None:
        """Store the training-set mean and std of each target (std 0 is replaced by 1)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))
        self.target_mean.copy_(mean_t)
        self.target_std.copy_(std_t)

    def standardise(self, y: Tensor) -> Tensor:
        return ((y.double() - self.target_mean) / self.target_std).float()

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Each target's support in standardised units, (T,) each (+-inf without one)."""
        if self.support is None:
            inf = torch.full_like(self.target_mean, math.inf)
            return -inf.float(), inf.float()
        sup = torch.tensor(self.support, dtype=torch.float64, device=self.target_mean.device)
        lo, hi = ((sup.T - self.target_mean) / self.target_std).float()
        return lo, hi

    def forward(self, x: Tensor) -> Any:
        """The head's raw output in standardised units: (mean, log-variance), each (B, T),
        for the Gaussian head; log bin probabilities (B, T, K) for the binned one."""
        if self.posterior == "flow":
            raise TypeError("a flow head has no plain output: use component() or nll()")
        return self.head(self.backbone(x))

    def nll(self, x: Tensor, y: Tensor, beta: float = 0.0) -> Tensor:
        """Mean negative log-likelihood per target of standardised targets ``y`` (B, T)."""
        h = self.backbone(x)
        if self.posterior == "gaussian":  # as before the other heads: the element mean
            mu, log_var = self.head(h)
            return gaussian_nll(mu, log_var, y, beta=beta)
        lo, hi = self.bounds()
        return self.head.nll(h, y, lo, hi).mean() / len(self.targets)

    def component(self, x: Tensor) -> Component:
        """The posterior of each image, in standardised units."""
        lo, hi = self.bounds()
        return self.head.component(self.backbone(x), lo, hi)

    @torch.no_grad()
    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance), each (B, T) float64, in physical units (eval mode; the
        Gaussian head; see ``predict_posterior`` for every head)."""
        mu, log_var = self(x)
        std = self.target_std.to(x.device)
        return (mu.double() * std + self.target_mean.to(x.device),
                log_var.double().exp() * std**2)


def mixture(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """Combine K Gaussians per element (leading axis K) as an equal-weight mixture.

    Returns (mean, variance): mean of means; mean of variances + (population) variance of means.
    """
    mean = means.mean(dim=0)
    var = variances.mean(dim=0) + ((means - mean) ** 2).mean(dim=0)
    return mean, var


def dihedral(x: Tensor, k: int) -> Tensor:
    """The k-th of the 8 dihedral transforms of images (..., H, W): rotate by 90*(k%4), flip if
    k >= 4. Exact (a permutation of pixels)."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def random_dihedral(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Apply an independently drawn dihedral transform to each image of a batch (B, C, H, W)."""
    ks = torch.randint(0, 8, (x.shape[0],), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for k in range(8):
        sel = ks == k
        if bool(sel.any()):
            out[sel] = dihedral(x[sel], k)
    return out


@torch.no_grad()
def predict_tta(model: Regressor, x: Tensor, tta: bool = True) -> tuple[Tensor, Tensor]:
    """(mean, variance) in physical units, averaged over the 8 dihedral views if ``tta``."""
    if not tta:
        return model.predict(x)
    views = [model.predict(dihedral(x, k)) for k in range(8)]
    return mixture(torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views]))


@torch.no_grad()
def predict_ensemble(models: Sequence[Regressor], x: Tensor,
                     tta: bool = True) -> tuple[Tensor, Tensor]:
    """Deep-ensemble prediction: every member (with TTA) combined as one equal-weight mixture.

    Each member's TTA mixture is itself a mixture, so the result equals the mixture over all
    members x views.
    """
    preds = [predict_tta(m, x, tta) for m in models]
    return mixture(torch.stack([p[0] for p in preds]), torch.stack([p[1] for p in preds]))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class PosteriorPrediction:
    """Per-image posteriors of an ensemble (every member x view as an equal-weight mixture),
    in physical units: ``mean``, ``var`` (N, T); ``samples`` (N, S, T); ``density`` (N, T, G)
    of each target's marginal on its ``grids`` row (T, G), or None without grids."""

    mean: np.ndarray
    var: np.ndarray
    samples: np.ndarray
    density: np.ndarray | None


def draws_per_image(n_models: int, tta: bool = True, n_samples: int = 256) -> int:
    """How many draws ``predict_posterior`` gives each image: ``n_samples`` rounded down to a
    multiple of its components (members x dihedral views), at least one from each."""
    n_comp = n_models * (8 if tta else 1)
    return max(1, n_samples // n_comp) * n_comp


@torch.no_grad()
def predict_posterior(models: Sequence[Regressor], x: Tensor, tta: bool = True,
                      n_samples: int = 256, grids: np.ndarray | None = None,
                      generator: torch.Generator | None = None,
                      density_draws: int = 1024) -> PosteriorPrediction:
    """The mixture over members and (with ``tta``) the 8 dihedral views of each image: its
    mean and variance (law of total variance), ``n_samples`` draws taken equally from every
    component (rounded down to a multiple of their number, at least one each) and, given
    ``grids`` (T, G) in physical units, the marginal densities averaged over components
    (a multi-target flow's from ``density_draws`` draws per component)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    views = range(8) if tta else range(1)
    per = draws_per_image(len(models), tta, n_samples) // (len(models) * len(views))
    means, variances, draws, dens = [], [], [], []
    for m in models:
        mean0, std = m.target_mean.cpu(), m.target_std.cpu()
        g_std = None if grids is None else (torch.as_tensor(grids, dtype=torch.float64)
                                            - mean0[:, None]) / std[:, None]
        for k in views:
            comp = m.component(dihedral(x, k))
            mu, var = comp.mean_var(gen)
            means.append(mu.cpu() * std + mean0)
            variances.append(var.cpu() * std**2)
            draws.append(comp.sample(per, gen).cpu() * std + mean0)
            if g_std is not None:
                dens.append(comp.density(g_std, gen, density_draws).cpu() / std[:, None])
    mean, var = mixture(torch.stack(means), torch.stack(variances))
    return PosteriorPrediction(
        mean.numpy(), var.numpy(), torch.cat(draws, dim=1).float().numpy(),
        None if grids is None else torch.stack(dens).mean(0).numpy())
