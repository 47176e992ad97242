"""The Jacobian's shortcut linear solve (one component moved, the rest reused) gives what the
full variable-projection solve gives."""

from __future__ import annotations

import pytest
import torch

from darklens.fit.fitter import _one_moved_residual
from darklens.fit.smooth_model import solve_linear


@pytest.mark.parametrize(("n_components", "moved_index"), [(1, 0), (2, 0), (2, 1)])
def test_one_moved_residual_matches_the_full_solve(n_components: int, moved_index: int):
    gen = torch.Generator().manual_seed(n_components * 10 + moved_index)
    b, p, n = 3, 50, 4
    base = torch.rand(b, n_components, p, generator=gen, dtype=torch.float64)
    data = torch.rand(b, p, generator=gen, dtype=torch.float64) * 5
    sqrt_w = 0.5 + torch.rand(b, p, generator=gen, dtype=torch.float64)
    moved = base[:, moved_index].unsqueeze(0) + 0.1 * torch.rand(n, b, p, generator=gen,
                                                                 dtype=torch.float64)
    full = base.unsqueeze(0).repeat(n, 1, 1, 1)
    full[:, :, moved_index] = moved
    _, model = solve_linear(full, data, sqrt_w * sqrt_w)
    expected = sqrt_w * (data - model)
    got = _one_moved_residual(moved, moved_index, base, data, sqrt_w)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # and the residual is orthogonal (in the weights) to every column of the moved design
    for col in [moved] + [base[:, j].expand(n, -1, -1) for j in range(n_components)
                          if j != moved_index]:
        assert (got * sqrt_w * col).sum(-1).abs().max() < 1e-6 * (data.abs().sum())


def test_fitter_jacobian_matches_central_differences_in_float64():
    """Every column, the lens centre included (it moves both the lensed source and the lens
    light), agrees with a float64 central-difference Jacobian of the exact residual."""
    from darklens.fit.fitter import SmoothLensFitter
    from darklens.fit.instrument import Instrument
    from darklens.fit.smooth_model import SmoothRenderer

    inst = Instrument(n_pix=24, pixel_scale=0.2, psf_fwhm=None, supersample=1, lens_light=True)
    fitter = SmoothLensFitter(inst)
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(4, fitter.renderer.n_params, generator=gen) * 0.5
    reference = SmoothRenderer(inst, dtype=torch.float64, backend="eager")
    truth = torch.randn(4, reference.n_params, generator=gen, dtype=torch.float64) * 0.5
    comps = reference.components(truth)
    data = (3 * comps[:, 0] + comps[:, 1] + 0.1).float()
    sqrt_w = torch.full_like(data, 2.0)
    _, jac_t = fitter._residual_and_jacobian(u, data, sqrt_w)

    def residual(v: torch.Tensor) -> torch.Tensor:
        w = sqrt_w.double()
        _, model = solve_linear(reference.components(v), data.double(), w * w)
        return w * (data.double() - model)

    h = 1e-4
    for col in range(reference.n_params):
        step = torch.zeros_like(u, dtype=torch.float64)
        step[:, col] = h
        expected = (residual(u.double() + step) - residual(u.double() - step)) / (2 * h)
        err = (jac_t[:, col].double() - expected).norm(dim=-1) / expected.norm(dim=-1)
        assert err.max() < 0.05, (reference.specs[col].name, err)
