"""ResNet regressors with a heteroscedastic Gaussian head, deep ensembles and dihedral TTA.

A ``Regressor`` maps images (B, 1, H, W) to a mean and a log-variance per target. It works in
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ARCHS: dict[str, dict[str, Any]] = {
    "small": {"widths": (16, 32, 64), "blocks": (1, 1, 1), "strides": (2, 2, 2)},
    "resnet18": {"widths": (64, 128, 256, 512), "blocks": (2, 2, 2, 2), "strides": (1, 2, 2, 2)},
    "resnet34": {"widths": (64, 128, 256, 512), "blocks": (3, 4, 6, 3), "strides": (1, 2, 2, 2)},
}
LOGVAR_MIN, LOGVAR_MAX = -14.0, 8.0  # in standardised units: sigma from 1e-3 to 55 std


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
    """ResNet + heteroscedastic Gaussian head for ``targets`` (see the module docstring)."""

    def __init__(self, targets: Sequence[str], arch: str = "small", in_channels: int = 1,
                 dropout: float = 0.0, widths: Sequence[int] | None = None,
                 blocks: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, norm: str = "batch") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; use one of {', '.join(ARCHS)}")
        if not targets:
            raise ValueError("a regressor needs at least one target")
        layout = ARCHS[arch]
        widths = tuple(widths or layout["widths"])
        blocks = tuple(blocks or layout["blocks"])
        strides = tuple(strides or layout["strides"])
        self.targets = tuple(targets)
        self.config = {"targets": list(self.targets), "arch": arch, "in_channels": in_channels,
                       "dropout": dropout, "widths": list(widths), "blocks": list(blocks),
                       "strides": list(strides), "norm": norm}
        self.backbone = ResNetBackbone(widths, blocks, strides, in_channels, norm)
        t = len(self.targets)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.backbone.out_features, 2 * t))
        nn.init.zeros_(self.head[1].bias)
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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log-variance), each (B, T), in standardised units."""
        out = self.head(self.backbone(x))
        t = len(self.targets)
        return out[:, :t], out[:, t:].clamp(LOGVAR_MIN, LOGVAR_MAX)

    @torch.no_grad()
    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance), each (B, T) float64, in physical units (eval mode)."""
        mu, log_var = self(x)
        std = self.target_std.to(x.device)
        return (mu.double() * std + self.target_mean.to(x.device),
                log_var.double().exp() * std**2)


def gaussian_nll(mean: Tensor, log_var: Tensor, target: Tensor, beta: float = 0.0,
                 reduction: str = "mean") -> Tensor:
    """Gaussian negative log-likelihood, including the constant 0.5 log 2 pi.

    ``beta > 0``: beta-NLL (each element weighted by the detached variance**beta).
    """
    nll = 0.5 * (log_var + (target - mean) ** 2 * torch.exp(-log_var) + math.log(2 * math.pi))
    if beta > 0:
        nll = nll * torch.exp(beta * log_var).detach()
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    if reduction == "none":
        return nll
    raise ValueError(f"unknown reduction {reduction!r}")


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
