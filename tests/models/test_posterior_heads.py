"""Posterior heads: the binned and flow heads learn a bounded, non-Gaussian posterior; draws,
densities and moments agree; support is required and kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darklens.models.posterior_heads import BinnedHead, FlowHead, GaussianHead
from darklens.models.regressor import Regressor, predict_posterior


def _fit_head(head, y, low, high, steps=300):
    """Fit an unconditional posterior (constant features) to draws y (N, T)."""
    h = torch.ones(len(y), 4)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(steps):
        opt.zero_grad()
        head.nll(h, y, low, high).mean().backward()
        opt.step()
    with torch.no_grad():
        return head.eval().component(h[:1], low, high)


@pytest.mark.parametrize("kind", ["binned", "flow"])
def test_head_learns_a_plateau_cut_at_the_prior_edge(kind):
    """Truths uniform on [0.4, 1] of the support [-1, 1] (a plateau at the upper edge): the
    head's draws stay inside the support and follow the plateau; a Gaussian cannot."""
    torch.manual_seed(0)
    y = 0.4 + 0.6 * torch.rand(2000, 1)
    low, high = torch.tensor([-1.0]), torch.tensor([1.0])
    head = BinnedHead(4, 1, n_bins=20) if kind == "binned" else FlowHead(4, 1, hidden=(16, 16))
    comp = _fit_head(head, y, low, high, steps=300 if kind == "binned" else 400)
    draws = comp.sample(4000, torch.Generator().manual_seed(1))[0, :, 0].numpy()
    assert draws.min() >= -1 and draws.max() <= 1
    assert np.mean(draws < 0.35) < 0.03  # hardly any mass below the plateau
    assert np.quantile(draws, 0.5) == pytest.approx(0.7, abs=0.06)
    assert np.quantile(draws, 0.9) == pytest.approx(0.94, abs=0.05)
    # the density integrates to one over the support and matches the draws' mean
    grid = torch.linspace(-1, 1, 401)[None]
    dens = comp.density(grid, torch.Generator().manual_seed(2))[0, 0].numpy()
    assert np.trapezoid(dens, grid[0].numpy()) == pytest.approx(1.0, abs=0.03)
    mean, var = comp.mean_var(torch.Generator().manual_seed(3), n=4000)
    assert float(mean) == pytest.approx(draws.mean(), abs=0.02)
    assert float(var) == pytest.approx(draws.var(), rel=0.15)


def test_gaussian_head_moments_and_draws():
    head = GaussianHead(4, 2)
    with torch.no_grad():
        comp = head.component(torch.randn(3, 4), -torch.ones(2), torch.ones(2))
    draws = comp.sample(20000, torch.Generator().manual_seed(0))
    mean, var = comp.mean_var(torch.Generator())
    assert torch.allclose(draws.mean(1), mean, atol=0.05)
    assert torch.allclose(draws.var(1), var, rtol=0.05)


def test_joint_flow_learns_a_correlation():
    """The flow is joint over targets: it learns y2 = y1 + small noise."""
    torch.manual_seed(0)
    y1 = torch.rand(2000, 1) * 1.6 - 0.8
    y = torch.cat([y1, y1 + 0.05 * torch.randn_like(y1)], 1).clamp(-0.99, 0.99)
    low, high = torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0])
    comp = _fit_head(FlowHead(4, 2, hidden=(32, 32)), y, low, high, steps=400)
    draws = comp.sample(3000, torch.Generator().manual_seed(1))[0].numpy()
    assert np.corrcoef(draws.T)[0, 1] > 0.9


def test_regressor_posteriors_need_a_support_and_save_it():
    with pytest.raises(ValueError, match="support"):
        Regressor(["a"], posterior="binned")
    with pytest.raises(ValueError, match="posterior"):
        Regressor(["a"], posterior="mixture")
    model = Regressor(["a"], posterior="binned", n_bins=8, support=[[-24, -22]])
    model.set_standardisation([-23.0], [0.5])
    clone = Regressor(**model.config)
    clone.load_state_dict(model.state_dict())
    assert clone.support == [[-24.0, -22.0]] and clone.posterior == "binned"
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    grids = np.linspace(-24, -22, 101)[None]
    a = predict_posterior([model], x, True, 64, grids, torch.Generator().manual_seed(5))
    b = predict_posterior([model], x, True, 64, grids, torch.Generator().manual_seed(5))
    assert np.array_equal(a.samples, b.samples)  # draws from the given generator only
    assert a.samples.shape == (2, 64, 1)
    assert a.samples.min() >= -24 and a.samples.max() <= -22
    assert np.allclose(np.trapezoid(a.density[:, 0], grids[0]), 1.0, atol=0.03)
