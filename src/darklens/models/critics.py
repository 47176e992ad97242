"""Critics f(z, zbar) for the InfoNCE bound, and the projection head they usually sit on.

Every critic maps ``z`` (K, D) and ``zbar`` (M, D) to the score matrix ``f(z_i, zbar_j)`` of
shape (K, M); the InfoNCE loss uses the square case M = K, and the detector's ``critic`` score
uses M = the size of its memory bank. Critics meet the rest only through tensors.

Which critics couple to the entropy bound R(z) = ||z||^2 (or ||z||_1) on the same z: only
``dot``. A critic that sees z / ||z|| (``cosine``, or any with ``normalise=True``) is blind to
the norm, so R can be driven down by shrinking the head's last layer without changing the
InfoNCE term at all: beta then trades nothing. A critic with a learned weight (``bilinear``
unnormalised, ``mlp``) can absorb a shrinking z into a growing weight. The dot critic has no
free scale: a smaller z is a blunter critic, and the trade-off I(X, Z) against H(Z) is real.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CRITICS: tuple[str, ...] = ("cosine", "bilinear", "mlp", "dot")


class ProjectionHead(nn.Module):
    """Two-layer MLP g(h) mapping backbone features to the critic's space (SimCLR style)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class _TemperatureCritic(nn.Module):
    """A critic with a fixed, positive temperature."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)


class CosineCritic(_TemperatureCritic):
    """f(z, zbar) = cos(z, zbar) / temperature; bounded by 1/temperature in absolute value.

    Always sees directions only, so the norm of z is free for the entropy penalty and the
    norm-based anomaly score.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__(temperature)

    def forward(self, z: Tensor, zbar: Tensor) -> Tensor:
        return F.normalize(z, dim=1) @ F.normalize(zbar, dim=1).T / self.temperature


class DotCritic(_TemperatureCritic):
    """f(z, zbar) = z . zbar / temperature on the raw z: no normalisation, no learned scale.

    The norm of z is the critic's inverse temperature, so the entropy bound on the same z
    (a Gaussian reference, R = ||z||^2) pays for every gain in sharpness: raising beta lowers
    R and the InfoNCE bound together.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__(temperature)

    def forward(self, z: Tensor, zbar: Tensor) -> Tensor:
        return z @ zbar.T / self.temperature


class BilinearCritic(nn.Module):
    """f(z, zbar) = z^T W zbar, with W initialised to the identity (the plain dot product).

    With ``normalise=True`` both inputs are scaled to unit length first (then f is bounded by
    the spectral norm of W); otherwise f sees the raw z, so the entropy penalty and the critic
    pull on the same norm.
    """

    def __init__(self, dim: int, normalise: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))
        self.normalise = bool(normalise)

    def forward(self, z: Tensor, zbar: Tensor) -> Tensor:
        if self.normalise:
            z, zbar = F.normalize(z, dim=1), F.normalize(zbar, dim=1)
        return z @ self.weight @ zbar.T


class MLPCritic(nn.Module):
    """A small discriminator on the pair: f(z, zbar) = MLP([z; zbar]), evaluated for all pairs.

    The first layer is split (W [z; zbar] = A z + B zbar) so that all K x M pairs cost one
    broadcast sum instead of K x M concatenations.
    """

    def __init__(self, dim: int, hidden: int = 64, normalise: bool = False) -> None:
        super().__init__()
        self.left = nn.Linear(dim, hidden)
        self.right = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))
        self.normalise = bool(normalise)

    def forward(self, z: Tensor, zbar: Tensor) -> Tensor:
        if self.normalise:
            z, zbar = F.normalize(z, dim=1), F.normalize(zbar, dim=1)
        pair = self.left(z)[:, None, :] + self.right(zbar)[None, :, :]  # (K, M, hidden)
        return self.out(pair).squeeze(-1)


def make_critic(
    kind: str, dim: int, temperature: float = 0.2, normalise: bool = False, hidden: int = 64
) -> nn.Module:
    """Build a critic by name: ``"cosine"``, ``"bilinear"``, ``"mlp"`` or ``"dot"``."""
    if kind == "cosine":
        return CosineCritic(temperature)
    if kind == "dot":
        return DotCritic(temperature)
    if kind == "bilinear":
        return BilinearCritic(dim, normalise=normalise)
    if kind == "mlp":
        return MLPCritic(dim, hidden=hidden, normalise=normalise)
    raise ValueError(f"unknown critic {kind!r}; choose one of {CRITICS}")


def couples_to_norm(kind: str) -> bool:
    """Whether an entropy bound on the critic's input z changes what the critic scores.

    True only for ``dot`` (see the module docstring): for the others a penalty on ||z|| can be
    paid off by a rescaling that leaves InfoNCE unchanged.
    """
    return kind == "dot"
