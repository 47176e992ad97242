"""The smooth model's two rendering paths agree, and each component depends only on the
parameters the fitter's Jacobian re-renders it for."""

from __future__ import annotations

import pytest
import torch

from darklens.fit.instrument import Instrument
from darklens.fit.smooth_model import SmoothRenderer
from darklens.simulate import backend as sim_backend

# lens light and a fitted PSF: every part of the model, at a small size
INST = Instrument(n_pix=24, pixel_scale=0.2, psf_fwhm=None, supersample=2, lens_light=True)


def test_each_component_ignores_the_parameters_outside_its_dependencies():
    renderer = SmoothRenderer(INST, backend="eager")
    torch.manual_seed(0)
    u = torch.randn(3, renderer.n_params) * 0.5
    base = renderer.components(u)
    deps = renderer.dependencies()
    assert len(deps) == renderer.n_components == 2
    for k in range(renderer.n_params):
        moved = u.clone()
        moved[:, k] += 0.3
        comps = renderer.components(moved)
        for c, cols in enumerate(deps):
            changed = not torch.equal(comps[:, c], base[:, c])
            assert changed == (k in cols), (renderer.specs[k].name, c)
    only_light = renderer.components(u, (1,))
    torch.testing.assert_close(only_light[:, 0], base[:, 1])


def test_compiled_components_match_eager():
    if not sim_backend.compiled_available():
        pytest.skip(f"no compiled path here: {sim_backend._state['error']}")
    torch.manual_seed(1)
    eager = SmoothRenderer(INST, backend="eager")
    fused = SmoothRenderer(INST, backend="compiled")
    u = torch.randn(5, eager.n_params) * 0.5
    with torch.no_grad():
        a, b = eager.components(u), fused.components(u)
        light = fused.components(u, (1,))
    scale = a.abs().amax(-1, keepdim=True)
    assert ((a - b).abs() / scale).max() < 1e-4
    torch.testing.assert_close(light[:, 0], b[:, 1])
