"""Every registered mass profile: its compiled kernel agrees with its eager function.

``physics.MASS_PROFILES`` names, per profile, the eager deflection on drawn parameters, the
per-image constants the compiled renderer tabulates and the formula its graph runs on them;
here each formula goes through the compiled path's own machinery (``compiled._call``: inductor,
float32) on random parameters and positions, against the eager function in float64.
"""

from __future__ import annotations

import pytest
import torch

from darklens.simulate import backend, compiled, physics


def _draw(profile: physics.MassProfile, n: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [lo + (hi - lo) * torch.rand(n, 1, generator=gen, dtype=torch.float64)
            for _, lo, hi in profile.params]


def _positions(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xy = (torch.rand(2, 1, n, generator=gen, dtype=torch.float64) - 0.5) * 6.0
    return xy[0], xy[1]


def _kernel(at):
    def run(x, y, *consts):
        return torch.stack(at(x - consts[0], y - consts[1], *consts[2:]), 1)  # (B, 2, P)
    return run


@pytest.mark.parametrize("name", sorted(physics.MASS_PROFILES))
def test_constants_and_formula_are_the_eager_deflection(name):
    profile = physics.MASS_PROFILES[name]
    params = _draw(profile, 5, seed=1)
    x, y = _positions(2)
    eager = torch.stack(profile.deflection(x, y, *params), 1)
    consts = profile.constants(*params)
    assert torch.allclose(_kernel(profile.at)(x, y, *consts), eager, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(physics.MASS_PROFILES))
def test_compiled_kernel_agrees_with_eager(name):
    if not backend.compiled_available():
        pytest.skip(f"no compiled path here: {backend._state['error']}")
    profile = physics.MASS_PROFILES[name]
    params = _draw(profile, 6, seed=3)
    x, y = _positions(4)
    eager = torch.stack(profile.deflection(x, y, *params), 1)  # (B, 2, P), float64
    consts = [c.expand(6, 1).to(torch.float32) for c in profile.constants(*params)]
    tensors = [x.float(), y.float(), *consts]
    got = compiled._call(f"profile_{name}", _kernel(profile.at), tensors,
                         [None, None, *[0] * len(consts)]).double()
    scale = eager.abs().max()
    assert float((got - eager).abs().max() / scale) < 1e-4
