"""DeepLense's restricted Boltzmann machine (2020), scored by free energy.

One Bernoulli visible unit per pixel (inputs are clamped to [0, 1] and used as probabilities),
``n_hidden`` Bernoulli hidden units (1000), trained by contrastive divergence with k Gibbs steps
(k = 1): loss = mean F(v_data) - mean F(v_model), where F(v) = -b.v - sum softplus(W v + c) is
the free energy and v_model is the end of the chain (no gradient through the sampling).

Score (``score``): ``"free-energy"`` (default, as the issue asks): F(v), high for improbable
images; or ``"reconstruction"``: the per-image MSE between v and its mean-field reconstruction
sigmoid(W^T sigmoid(W v + c) + b). DeepLense's published RBM scores are of the second kind
(the MSE of one sampled Gibbs reconstruction); we use the mean field to stay deterministic.

Difference from DeepLense: they initialised W and both biases with randn (std 1), which
saturates every hidden unit on 22500 inputs (their published RBM AUROC is 0.51, chance); we
use W ~ N(0, init_std^2) with init_std = 0.01, zero hidden biases and visible biases set in
``fit_start`` to log(p / (1 - p)) of each pixel's mean p over the training images (Hinton's
practical guide, section 8; ``data_init=False`` keeps them at zero). Pass ``init_std=1.0`` to
mimic DeepLense's weight scale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.models.base import Detector, register_detector
from darklens.models.encoders import DEEPLENSE_TRAIN_DEFAULTS


@register_detector
class RBM(Detector):
    """Bernoulli-Bernoulli RBM over pixels."""

    name = "rbm"
    representation = "hidden-unit probabilities"
    train_defaults: ClassVar[dict[str, Any]] = DEEPLENSE_TRAIN_DEFAULTS

    def __init__(self, image_size: int = 64, in_channels: int = 1, n_hidden: int = 1000,
                 k: int = 1, init_std: float = 0.01, data_init: bool = True,
                 score: str = "free-energy"):
        super().__init__(image_size=image_size, in_channels=in_channels, n_hidden=n_hidden,
                         k=k, init_std=init_std, data_init=data_init, score=score)
        if score not in ("free-energy", "reconstruction"):
            raise ValueError(f"score must be 'free-energy' or 'reconstruction', not {score!r}")
        n_vis = in_channels * image_size * image_size
        self.W = nn.Parameter(torch.randn(n_hidden, n_vis) * init_std)
        self.v_bias = nn.Parameter(torch.zeros(n_vis))
        self.h_bias = nn.Parameter(torch.zeros(n_hidden))
        self.k = int(k)

    @torch.no_grad()
    def fit_start(self, loader: Iterable) -> None:
        if not self.config["data_init"]:
            return
        total, n = torch.zeros_like(self.v_bias), 0
        for images in loader:
            total += self._visible(images).sum(dim=0)
            n += images.shape[0]
        if n:
            p = (total / n).clamp(1e-3, 1 - 1e-3)
            self.v_bias.copy_(torch.log(p / (1 - p)))

    def _visible(self, images: Tensor) -> Tensor:
        return images.flatten(1).clamp(0.0, 1.0)

    def free_energy(self, v: Tensor) -> Tensor:
        """Free energy per sample, shape (B,)."""
        return -(v @ self.v_bias) - F.softplus(F.linear(v, self.W, self.h_bias)).sum(dim=1)

    @torch.no_grad()
    def gibbs(self, v: Tensor) -> Tensor:
        """k steps of block Gibbs sampling starting from the data."""
        for _ in range(self.k):
            h = torch.bernoulli(torch.sigmoid(F.linear(v, self.W, self.h_bias)))
            v = torch.bernoulli(torch.sigmoid(F.linear(h, self.W.t(), self.v_bias)))
        return v

    def training_loss(self, batch: Tensor) -> Tensor:
        v = self._visible(batch)
        v_model = self.gibbs(v)
        return self.free_energy(v).mean() - self.free_energy(v_model).mean()

    def reconstruction_error(self, v: Tensor) -> Tensor:
        """Per-image MSE of the mean-field reconstruction, shape (B,)."""
        p_h = torch.sigmoid(F.linear(v, self.W, self.h_bias))
        recon = torch.sigmoid(F.linear(p_h, self.W.t(), self.v_bias))
        return ((recon - v) ** 2).mean(dim=1)

    def validation_loss(self, batch: Tensor) -> Tensor:
        """Mean-field reconstruction MSE (deterministic, unlike the CD loss)."""
        return self.reconstruction_error(self._visible(batch)).mean()

    def embed(self, images: Tensor) -> Tensor:
        """Features for the report's representation map: the hidden-unit probabilities."""
        return torch.sigmoid(F.linear(self._visible(images), self.W, self.h_bias))

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        v = self._visible(images)
        if self.config["score"] == "reconstruction":
            return self.reconstruction_error(v)
        return self.free_energy(v)

    @torch.no_grad()
    def where_map(self, images: Tensor) -> Tensor:
        """Per-pixel squared error of the mean-field reconstruction, (B, H, W) (the free
        energy does not split into pixels; DeepLense's RBM score is this error's mean)."""
        v = self._visible(images)
        p_h = torch.sigmoid(F.linear(v, self.W, self.h_bias))
        recon = torch.sigmoid(F.linear(p_h, self.W.t(), self.v_bias))
        return (recon - v).square().view(images.shape).sum(dim=1)
