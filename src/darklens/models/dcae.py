"""DeepLense's deep convolutional autoencoder (DCAE, 2020), scored by reconstruction error.

Encoder convolutions -> Linear(F -> latent) -> BatchNorm1d -> Linear(latent -> F) -> decoder,
with no activation between the two linear maps and none after the third convolution, as in
``unsupervised_lensing/models/DCAE_Nets.py`` (F = 5184 at 150x150, latent = 1000). MSE loss;
the anomaly score is the per-image reconstruction MSE.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from darklens.models.autoencoder import DeepLenseAutoencoder
from darklens.models.base import register_detector


@register_detector
class DCAE(DeepLenseAutoencoder):
    """Convolutional autoencoder with a batch-normalised linear bottleneck."""

    name = "dcae"
    representation = "encoder"
    relu_last = False

    def __init__(self, image_size: int = 64, in_channels: int = 1, latent_dim: int = 1000,
                 out_activation: str = "tanh"):
        super().__init__(image_size, in_channels, latent_dim, out_activation)

    def build_bottleneck(self, features: int, latent_dim: int) -> None:
        self.bottleneck = nn.Sequential(
            nn.Linear(features, latent_dim), nn.BatchNorm1d(latent_dim),
            nn.Linear(latent_dim, features)
        )

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(self.bottleneck(self.encoder(x)))

    def training_loss(self, batch: Tensor) -> Tensor:
        return F.mse_loss(self.reconstruct(batch), batch)

    def embed(self, images: Tensor) -> Tensor:
        """Features for the report's representation map: the encoder."""
        return self.encoder(images)
