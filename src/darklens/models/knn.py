"""k-nearest-neighbour distance in the feature space of a frozen encoder: a cheap, strong baseline.

Nothing is trained and nothing is downloaded. ``fit_start`` embeds the training normals into a
memory bank; the score of an image is the mean Euclidean distance from its features to its k
nearest neighbours in the bank. Two feature maps:

- ``"random-cnn"`` (default): a randomly initialised, fixed CNN whose weights are drawn from
  ``feature_seed`` (three Conv3x3 + ReLU + 2x2 average-pool stages, widths 32/64/64; the maps of
  the last two stages average-pooled to 4x4 and concatenated). Random convolutional features
  keep local structure (arcs, clumps) that global pixel distances blur.
- ``"pixels"``: the image average-pooled to ``pixel_size`` x ``pixel_size``.

Each feature is standardised with the bank's mean and standard deviation (buffers, saved with
the weights). With more than ``max_bank`` training images a fixed-seed random subset is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from darklens.models.base import Detector, register_detector


def _random_cnn(in_channels: int, seed: int) -> nn.ModuleList:
    gen = torch.Generator().manual_seed(seed)
    widths = [in_channels, 32, 64, 64]
    convs = nn.ModuleList()
    for cin, cout in zip(widths[:-1], widths[1:], strict=True):
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        bound = (6.0 / (cin * 9)) ** 0.5  # He-uniform, so that activations keep their scale
        with torch.no_grad():
            conv.weight.copy_((torch.rand(conv.weight.shape, generator=gen) * 2 - 1) * bound)
            conv.bias.zero_()
        conv.requires_grad_(False)
        convs.append(conv)
    return convs


@register_detector
class KNN(Detector):
    """Mean distance to the k nearest training normals in a frozen feature space."""

    name = "knn"
    representation = "frozen feature map"

    def __init__(self, image_size: int = 64, in_channels: int = 1, k: int = 5,
                 features: str = "random-cnn", feature_seed: int = 0, pixel_size: int = 32,
                 max_bank: int = 20000):
        super().__init__(image_size=image_size, in_channels=in_channels, k=k, features=features,
                         feature_seed=feature_seed, pixel_size=pixel_size, max_bank=max_bank)
        if features not in ("random-cnn", "pixels"):
            raise ValueError(f"features must be 'random-cnn' or 'pixels', not {features!r}")
        self.convs = _random_cnn(in_channels, feature_seed) if features == "random-cnn" else None
        self.register_buffer("bank", torch.zeros(0, 0))
        self.register_buffer("feat_mean", torch.zeros(0))
        self.register_buffer("feat_std", torch.zeros(0))

    def raw_features(self, images: Tensor) -> Tensor:
        """Unstandardised features, shape (B, D)."""
        if self.convs is None:
            return F.adaptive_avg_pool2d(images, self.config["pixel_size"]).flatten(1)
        x, parts = images, []
        for i, conv in enumerate(self.convs):
            x = F.avg_pool2d(F.relu(conv(x)), 2)
            if i >= 1:
                parts.append(F.adaptive_avg_pool2d(x, 4).flatten(1))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def fit_start(self, loader: Iterable) -> None:
        feats = torch.cat([self.raw_features(images) for images in loader])
        if feats.shape[0] == 0:
            raise ValueError("kNN needs training images for its memory bank")
        if feats.shape[0] > self.config["max_bank"]:
            gen = torch.Generator().manual_seed(self.config["feature_seed"])
            keep = torch.randperm(feats.shape[0], generator=gen)[: self.config["max_bank"]]
            feats = feats[keep]
        self.feat_mean = feats.mean(dim=0)
        self.feat_std = feats.std(dim=0).clamp_min(1e-6)
        self.bank = (feats - self.feat_mean) / self.feat_std

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # The bank's size depends on the training set: take the saved shapes.
        for name in ("bank", "feat_mean", "feat_std"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def training_loss(self, batch: Tensor) -> Tensor:
        raise RuntimeError("kNN has nothing to train; its memory bank is built in fit_start")

    def embed(self, images: Tensor) -> Tensor:
        """Features for the report's representation map: the frozen feature map."""
        return self.raw_features(images)

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        if self.bank.shape[0] == 0:
            raise RuntimeError("kNN has an empty memory bank: fit it first")
        z = (self.raw_features(images) - self.feat_mean) / self.feat_std
        k = min(int(self.config["k"]), self.bank.shape[0])
        out = []
        for chunk in z.split(256):
            d = torch.cdist(chunk, self.bank)
            out.append(d.topk(k, dim=1, largest=False).values.mean(dim=1))
        return torch.cat(out)
