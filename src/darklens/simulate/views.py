"""Simulator-native views: the same lens rendered several times with independent noise draws.

For contrastive training (the infotheoretic detector) the best positive pair is two observations
of the *same* lens that differ only in what an observation cannot control: the noise. Augmenting
one noisy image cannot give that (its noise is fixed; adding more lowers the signal-to-noise
ratio), but the simulator can, because image ``i`` of class ``c`` under seed ``s`` is a pure
function of ``(preset, s, c, i)``: the noiseless image is rendered once and ``n_views`` noise
fields are added, each from the image's own counter-based noise stream under a different seed.

View 0 uses the image's own noise stream, so it is byte-identical to what ``simulate_dataset``
gives for that image; view ``v`` uses the seed ``seed + v * 2**32``, whose low 32 bits (and so
the draw of every other parameter) are unchanged while the noise keys differ.

With ``new_source=True`` views after the first also get a new source (its light profile,
brightness and position, ``SOURCE_KEYS``, drawn under that same per-view seed) behind the same
lens and substructure: the positive pair then differs in the source as well as the noise.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from darklens.simulate.observation import noise_sigma, observe
from darklens.simulate.parameters import draw_parameters
from darklens.simulate.presets import Preset, get_preset
from darklens.simulate.render import render_noiseless

VIEW_SEED_STRIDE = 2**32
# The parameters of the source light (``draw_parameters``); redrawn per view with new_source.
SOURCE_KEYS: tuple[str, ...] = ("source_r_eff", "source_n", "source_q", "source_phi",
                                "source_amp", "source_magnitude", "source_x", "source_y")


def render_views(
    preset: Preset | str,
    class_name: str,
    indices: np.ndarray | Tensor,
    seed: int,
    n_views: int = 2,
    batch_size: int = 256,
    new_source: bool = False,
) -> Tensor:
    """Images ``indices`` of one class, each rendered ``n_views`` times: (B, n_views, H, W).

    Every view has the same lens, source and substructure and the same noise model; only the
    noise field differs (and, with ``new_source``, the source of views 1, 2, ...). View 0
    equals the image ``simulate_dataset`` makes.
    """
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    preset = get_preset(preset) if isinstance(preset, str) else preset
    idx_all = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    out = []
    for start in range(0, idx_all.shape[0], batch_size):
        idx = idx_all[start:start + batch_size]
        p = draw_parameters(preset, class_name, idx, seed)
        clean = render_noiseless(preset, p, substructure=True)
        sigma = noise_sigma(preset, p, clean)
        views = []
        for v in range(n_views):
            view_seed = seed + v * VIEW_SEED_STRIDE
            if new_source and v > 0:
                clean, sigma = _with_new_source(preset, class_name, idx, view_seed, p)
            views.append(observe(preset, clean, sigma, view_seed, class_name, idx))
        out.append(torch.stack(views, dim=1))
    return torch.cat(out)


def _with_new_source(preset: Preset, class_name: str, idx: Tensor, view_seed: int,
                     p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The noiseless image and noise sigma of the lenses ``p`` behind a source drawn anew."""
    drawn = draw_parameters(preset, class_name, idx, view_seed)
    q = {**p, **{k: drawn[k] for k in SOURCE_KEYS if k in drawn}}
    clean = render_noiseless(preset, q, substructure=True)
    return clean, noise_sigma(preset, q, clean)
