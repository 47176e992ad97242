"""DeepLense's deep convolutional autoencoder (DCAE, 2020), scored by reconstruction error.

Encoder convolutions -> Linear(F -> latent) -> BatchNorm1d -> Linear(latent -> F) -> decoder,
with no activation between the two linear maps and none after the third convolution, as in
``unsupervised_lensing/models/DCAE_Nets.py`` (F = 5184 at 150x150, latent = 1000). MSE loss;
the anomaly score is the per-image reconstruction MSE.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.models.base import Detector, register_detector
from darklens.models.encoders import (
    DEEPLENSE_TRAIN_DEFAULTS,
    DeepLenseDecoder,
    DeepLenseEncoder,
    reconstruction_error,
)


@register_detector
class DCAE(Detector):
    """Convolutional autoencoder with a batch-normalised linear bottleneck."""

    name = "dcae"
    representation = "encoder"
    train_defaults: ClassVar[dict[str, Any]] = DEEPLENSE_TRAIN_DEFAULTS

    def __init__(self, image_size: int = 64, in_channels: int = 1, latent_dim: int = 1000,
                 out_activation: str = "tanh"):
        super().__init__(image_size=image_size, in_channels=in_channels, latent_dim=latent_dim,
                         out_activation=out_activation)
        self.encoder = DeepLenseEncoder(image_size, in_channels, relu_last=False)
        feats = self.encoder.features
        self.bottleneck = nn.Sequential(
            nn.Linear(feats, latent_dim), nn.BatchNorm1d(latent_dim), nn.Linear(latent_dim, feats)
        )
        self.decoder = DeepLenseDecoder(image_size, in_channels, out_activation)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(self.bottleneck(self.encoder(x)))

    def training_loss(self, batch: Tensor) -> Tensor:
        return F.mse_loss(self.reconstruct(batch), batch)

    def embed(self, images: Tensor) -> Tensor:
        """Features for the report's representation map: the encoder."""
        return self.encoder(images)

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        return reconstruction_error(images, self.reconstruct(images))

    @torch.no_grad()
    def where_map(self, images: Tensor) -> Tensor:
        """Per-pixel squared reconstruction error, (B, H, W)."""
        return (self.reconstruct(images) - images).square().sum(dim=1)
