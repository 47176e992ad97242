"""DeepLense's adversarial autoencoder (AAE, 2020), scored by reconstruction error.

Encoder convolutions (ReLU after each) -> Linear(F -> latent) = z; decoder Linear(latent -> F)
-> transposed convolutions -> tanh. A discriminator latent -> 256 -> 256 -> 1 (sigmoid) tells
samples of the prior N(0, prior_std^2 I) (prior_std = 5) from encoded images, and the encoder
learns, as a generator, to fool it. Every batch takes three optimiser steps, run by the shared
loop through ``optimizer_groups`` / ``part_loss``, in DeepLense's order:

1. ``ae``: encoder + decoder on the reconstruction MSE (lr);
2. ``disc``: discriminator on -mean[log D(z_prior) + log(1 - D(z_enc))] (lr);
3. ``gen``: encoder on -mean[log D(z_enc)] (lr x 0.1: DeepLense's "encoder regulariser", 1e-4
   for lr 1e-3).

DeepLense used plain Adam at 1e-3 with no weight decay and no schedule for the AAE; those are
this detector's training defaults. One difference: DeepLense drew 100 prior samples per step
whatever the batch size; we draw one per image in the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.models.base import Detector, OptimizerGroup, register_detector
from darklens.models.encoders import DeepLenseDecoder, DeepLenseEncoder, reconstruction_error

EPS = 1e-15


@register_detector
class AAE(Detector):
    """Adversarial autoencoder with a Gaussian prior on the latent code."""

    name = "aae"
    representation = "encoder"
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none", "batch_size": 100, "epochs": 50,
    }

    def __init__(self, image_size: int = 64, in_channels: int = 1, latent_dim: int = 1000,
                 disc_hidden: int = 256, prior_std: float = 5.0, gen_lr_scale: float = 0.1,
                 out_activation: str = "tanh"):
        super().__init__(image_size=image_size, in_channels=in_channels, latent_dim=latent_dim,
                         disc_hidden=disc_hidden, prior_std=prior_std, gen_lr_scale=gen_lr_scale,
                         out_activation=out_activation)
        conv = DeepLenseEncoder(image_size, in_channels, relu_last=True)
        self.encoder = nn.Sequential(conv, nn.Linear(conv.features, latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, conv.features),
            DeepLenseDecoder(image_size, in_channels, out_activation),
        )
        self.discriminator = nn.Sequential(
            nn.Linear(latent_dim, disc_hidden), nn.ReLU(),
            nn.Linear(disc_hidden, disc_hidden), nn.ReLU(),
            nn.Linear(disc_hidden, 1), nn.Sigmoid(),
        )
        self.prior_std = float(prior_std)
        self.gen_lr_scale = float(gen_lr_scale)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        ae = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return {
            "ae": OptimizerGroup(ae),
            "disc": OptimizerGroup(list(self.discriminator.parameters())),
            "gen": OptimizerGroup(list(self.encoder.parameters()), lr_scale=self.gen_lr_scale),
        }

    def part_loss(self, batch: Tensor, part: str) -> Tensor:
        if part == "ae":
            return self.training_loss(batch)
        if part == "disc":
            z_prior = torch.randn(batch.shape[0], self.config["latent_dim"],
                                  device=batch.device) * self.prior_std
            d_real = self.discriminator(z_prior)
            with torch.no_grad():  # the encoder is not stepped here
                z_enc = self.encoder(batch)
            d_fake = self.discriminator(z_enc)
            return -torch.mean(torch.log(d_real + EPS) + torch.log(1 - d_fake + EPS))
        if part == "gen":
            return -torch.mean(torch.log(self.discriminator(self.encoder(batch)) + EPS))
        raise ValueError(f"unknown part {part!r}")

    def training_loss(self, batch: Tensor) -> Tensor:
        return F.mse_loss(self.decoder(self.encoder(batch)), batch)

    def embed(self, images: Tensor) -> Tensor:
        """Features for the report's representation map: the encoder."""
        return self.encoder(images)

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        return reconstruction_error(images, self.decoder(self.encoder(images)))

    @torch.no_grad()
    def where_map(self, images: Tensor) -> Tensor:
        """Per-pixel squared reconstruction error, (B, H, W)."""
        return (self.decoder(self.encoder(images)) - images).square().sum(dim=1)
