"""Shared CNN backbones: DeepLense's 2020 convolutional encoder/decoder and a small generic CNN.

DeepLense's reference network (150x150, one channel)::

    Conv(1->16, k7, s3, p1) ReLU   150 -> 49
    Conv(16->32, k7, s3, p1) ReLU   49 -> 15
    Conv(32->64, k7)                15 -> 9      64x9x9 = 5184 features

and a decoder that mirrors it with transposed convolutions, ending in tanh::

    ConvT(64->32, k7) ReLU                         9 -> 15
    ConvT(32->16, k7, s3, p1, output_padding 2) ReLU  15 -> 49
    ConvT(16->1, k6, s3, p1, output_padding 2) tanh   49 -> 150

Other sizes keep the first two convolutions and choose the third kernel so that the final map
scales like the reference (9/150 of the input side): 64x64 -> 20 -> 6 -> 4 (kernel 3; 64x4x4 =
1024 features), 32x32 -> 10 -> 2 -> 2 (kernel 1). The decoder's output paddings (and, where an
output padding of 3 would be needed, a kernel of 7 instead of 6 in the last layer) are computed
so that it returns exactly the input size. At 150x150 every layer is DeepLense's.

Output range: DeepLense min-max normalises every image to [0, 1] and still ends the decoder in
tanh, whose range (-1, 1) contains [0, 1); the network simply learns non-negative outputs. We
keep tanh for fidelity (the reconstruction MSE that is the anomaly score is computed the same
way); ``out_activation="sigmoid"`` or ``"none"`` are offered for other input ranges.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

#: DeepLense's 2020 training schedule, shared by its baselines here (dcae, cvae, rbm): Adam,
#: lr 2e-3, weight decay 1e-5, one-cycle, batch 100, 50 epochs. Read-only.
DEEPLENSE_TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 2e-3, "weight_decay": 1e-5, "scheduler": "one-cycle", "batch_size": 100, "epochs": 50,
}


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Side length after a convolution (no dilation)."""
    return (size + 2 * padding - kernel) // stride + 1


def deeplense_shapes(image_size: int) -> dict[str, int]:
    """Side lengths and kernels of the DeepLense encoder/decoder for a square input.

    Returns s1, s2, s3 (sides after each conv), k3 (third kernel), op2 (output padding of the
    middle transposed conv), k_last and op_last (the last transposed conv).
    """
    s1 = conv_out(image_size, 7, 3, 1)
    s2 = conv_out(s1, 7, 3, 1)
    if s1 < 1 or s2 < 1:
        raise ValueError(f"image size {image_size} is too small for the DeepLense encoder "
                         "(needs >= 17)")
    target = max(1, round(image_size * 9 / 150))
    k3 = min(max(1, s2 - target + 1), s2)
    s3 = s2 - k3 + 1
    # ConvT(k7, s3, p1): out = 3*s2 + 2 + op  ->  op = s1 - 3*s2 - 2 (always in [0, 2]).
    op2 = s1 - 3 * s2 - 2
    # Last layer: kernel 6 gives out = 3*s1 + 1 + op, kernel 7 gives 3*s1 + 2 + op.
    op6 = image_size - 3 * s1 - 1
    if 0 <= op6 <= 2:
        k_last, op_last = 6, op6
    else:
        k_last, op_last = 7, image_size - 3 * s1 - 2
    return {"s1": s1, "s2": s2, "s3": s3, "k3": k3, "op2": op2, "k_last": k_last,
            "op_last": op_last}


class DeepLenseEncoder(nn.Module):
    """DeepLense's three convolutions; returns the flattened (B, 64*s3*s3) feature map.

    ``relu_last`` applies a ReLU after the third convolution (the AAE and VAE do; the DCAE
    does not).
    """

    def __init__(self, image_size: int = 150, in_channels: int = 1, relu_last: bool = True):
        super().__init__()
        sh = deeplense_shapes(image_size)
        self.side = sh["s3"]
        self.features = 64 * sh["s3"] ** 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 16, 7, stride=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 7, stride=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, sh["k3"]),
        ]
        if relu_last:
            layers.append(nn.ReLU())
        layers.append(nn.Flatten())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DeepLenseDecoder(nn.Module):
    """Mirror of ``DeepLenseEncoder``: (B, 64*s3*s3) features -> (B, C, H, W) image."""

    def __init__(self, image_size: int = 150, out_channels: int = 1,
                 out_activation: str = "tanh"):
        super().__init__()
        sh = deeplense_shapes(image_size)
        self.side = sh["s3"]
        acts = {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "none": nn.Identity()}
        if out_activation not in acts:
            raise ValueError(f"out_activation must be one of {sorted(acts)}")
        self.net = nn.Sequential(
            nn.ConvTranspose2d(64, 32, sh["k3"]),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 16, 7, stride=3, padding=1, output_padding=sh["op2"]),
            nn.ReLU(),
            nn.ConvTranspose2d(16, out_channels, sh["k_last"], stride=3, padding=1,
                               output_padding=sh["op_last"]),
            acts[out_activation],
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h.reshape(-1, 64, self.side, self.side))


class SmallCNN(nn.Module):
    """A small generic backbone: image (B, C, H, W) -> latent (B, latent_dim).

    ``depth`` blocks of Conv(k3, s2) [+ BatchNorm] + LeakyReLU, doubling the width each block,
    then global average pooling and a linear map. ``bias=False`` removes every bias term and
    uses BatchNorm without affine parameters, as Deep SVDD requires (a bias lets the network
    map everything onto the centre: the trivial solution of Ruff et al. 2018, Prop. 2).
    """

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3,
                 latent_dim: int = 32, bias: bool = True, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            out = width * 2**i
            layers.append(nn.Conv2d(ch, out, 3, stride=2, padding=1, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out, affine=bias))
            layers.append(nn.LeakyReLU(0.1))
            ch = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, latent_dim, bias=bias)]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def coordinate_channels(size: int, device: torch.device | None = None) -> Tensor:
    """(3, size, size) maps of x, y and r around the image centre (the lens), x and y in [-1, 1].

    Concatenated to the image so that convolutions know where a pixel sits relative to the
    lens: a clump on the Einstein ring and the same clump far outside it are different things.
    """
    c = (size - 1) / 2
    axis = (torch.arange(size, dtype=torch.float32, device=device) - c) / max(c, 1.0)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y, torch.sqrt(x**2 + y**2)])


class SpatialCNN(nn.Module):
    """A position-aware backbone: keeps the spatial map, never pools it away.

    Input: the image plus ``coordinate_channels`` (x, y, r around the centre). A first
    convolution at full resolution, then ``depth - 1`` blocks of Conv(k3, s2) + BatchNorm +
    LeakyReLU (doubling the width), then a 1x1 convolution to ``patch_dim`` channels: the patch
    map (B, patch_dim, s, s), s = size / 2^(depth-1). The latent is a linear map of the whole
    flattened patch map (no global pooling), so where a feature sits changes the latent, and
    the patch map itself gives patch-level anomaly scores.
    """

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 4,
                 latent_dim: int = 128, image_size: int = 64, patch_dim: int = 32,
                 coords: bool = True):
        super().__init__()
        self.coords = bool(coords)
        ch = in_channels + (3 if coords else 0)
        layers: list[nn.Module] = [nn.Conv2d(ch, width, 3, padding=1), nn.BatchNorm2d(width),
                                   nn.LeakyReLU(0.1)]
        ch, side = width, image_size
        for i in range(1, depth):
            out = width * 2**i
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.1)]
            ch, side = out, conv_out(side, 3, 2, 1)
        layers.append(nn.Conv2d(ch, patch_dim, 1))
        self.net = nn.Sequential(*layers)
        self.side, self.patch_dim, self.latent_dim = side, patch_dim, latent_dim
        self.fc = nn.Linear(patch_dim * side * side, latent_dim)
        self.register_buffer("grid", coordinate_channels(image_size), persistent=False)

    def patch_map(self, x: Tensor) -> Tensor:
        """The patch map (B, patch_dim, s, s)."""
        if self.coords:
            x = torch.cat([x, self.grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)
        return self.net(x)

    def latent(self, maps: Tensor) -> Tensor:
        """The latent (B, latent_dim) of a patch map."""
        return self.fc(maps.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.latent(self.patch_map(x))


def reconstruction_error(x: Tensor, recon: Tensor) -> Tensor:
    """Per-image mean squared error, shape (B,): DeepLense's anomaly score."""
    return ((recon - x) ** 2).flatten(1).mean(dim=1)


__all__ = [
    "DeepLenseDecoder",
    "DeepLenseEncoder",
    "SmallCNN",
    "SpatialCNN",
    "coordinate_channels",
    "conv_out",
    "deeplense_shapes",
    "reconstruction_error",
]
