"""DeepLense's convolutional variational autoencoder (2020), scored by reconstruction error.

Encoder convolutions (ReLU after each) -> mu and log-variance heads Linear(F -> latent);
z = mu + sigma * eps -> Linear(latent -> F) -> decoder. Loss: MSE + beta_kl * KL(q(z|x) || N(0, I)).

``beta_kl`` defaults to 0, DeepLense's default (their published VAE numbers are with beta 0,
which makes this a noisy-bottleneck autoencoder). Our KL is summed over latent dimensions and
averaged over the batch; DeepLense summed it over the batch too, so their beta equals ours
divided by the batch size (100). Scoring decodes the mean mu (deterministic, so that scores
are reproducible); DeepLense decoded one random sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.models.autoencoder import DeepLenseAutoencoder
from darklens.models.base import register_detector


@register_detector
class CVAE(DeepLenseAutoencoder):
    """Convolutional VAE with a configurable KL weight."""

    name = "cvae"
    representation = "encoder mean"

    def __init__(self, image_size: int = 64, in_channels: int = 1, latent_dim: int = 1000,
                 beta_kl: float = 0.0, out_activation: str = "tanh"):
        super().__init__(image_size, in_channels, latent_dim, out_activation, beta_kl=beta_kl)
        self.beta_kl = float(beta_kl)

    def build_bottleneck(self, features: int, latent_dim: int) -> None:
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)
        self.expand = nn.Linear(latent_dim, features)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.expand(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoded from the mean mu (deterministic)."""
        return self.decode(self.encode(x)[0])

    def training_loss(self, batch: Tensor) -> Tensor:
        mu, logvar = self.encode(batch)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        loss = F.mse_loss(self.decode(z), batch)
        if self.beta_kl:
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
            loss = loss + self.beta_kl * kl
        return loss

    def validation_loss(self, batch: Tensor) -> Tensor:
        return self.score(batch).mean()

    def embed(self, images: Tensor) -> Tensor:
        """Features for the report's representation map: the encoder mean."""
        return self.encode(images)[0]
