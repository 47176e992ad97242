"""DeepLense's autoencoders (dcae, cvae): what they share, written once.

DeepLense's convolutional encoder, a bottleneck of the detector's own, the mirrored decoder
(built in that order, so that a seed draws the same weights as before this class existed),
DeepLense's training schedule, and the score: the per-image MSE of the deterministic
reconstruction (``reconstruct``), whose per-pixel squared error is the where-map.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from darklens.models.base import Detector
from darklens.models.encoders import (
    DEEPLENSE_TRAIN_DEFAULTS,
    DeepLenseDecoder,
    DeepLenseEncoder,
    reconstruction_error,
)


class DeepLenseAutoencoder(Detector):
    """Encoder -> ``build_bottleneck`` -> decoder, scored by reconstruction error.

    A subclass sets ``relu_last`` (a ReLU after the encoder's third convolution), builds its
    bottleneck from the encoder's feature count and defines ``reconstruct``.
    """

    train_defaults: ClassVar[dict[str, Any]] = DEEPLENSE_TRAIN_DEFAULTS
    relu_last: ClassVar[bool] = True

    def __init__(self, image_size: int = 64, in_channels: int = 1, latent_dim: int = 1000,
                 out_activation: str = "tanh", **options: Any):
        super().__init__(image_size=image_size, in_channels=in_channels, latent_dim=latent_dim,
                         **options, out_activation=out_activation)
        self.encoder = DeepLenseEncoder(image_size, in_channels, relu_last=self.relu_last)
        self.build_bottleneck(self.encoder.features, latent_dim)
        self.decoder = DeepLenseDecoder(image_size, in_channels, out_activation)

    def build_bottleneck(self, features: int, latent_dim: int) -> None:
        """The layers between the encoder (``features`` outputs) and the decoder."""
        raise NotImplementedError

    def reconstruct(self, x: Tensor) -> Tensor:
        """The deterministic reconstruction of ``x``, the one that is scored."""
        raise NotImplementedError

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        return reconstruction_error(images, self.reconstruct(images))

    @torch.no_grad()
    def where_map(self, images: Tensor) -> Tensor:
        """Per-pixel squared reconstruction error, (B, H, W)."""
        return (self.reconstruct(images) - images).square().sum(dim=1)
