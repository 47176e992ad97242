"""The Gaussian NLL loss, mixtures (ensembles), dihedral TTA and the ResNet regressors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darklens.models.regressor import (
    Regressor,
    dihedral,
    gaussian_nll,
    mixture,
    predict_ensemble,
    predict_tta,
    random_dihedral,
)


def test_nll_matches_hand_formula_and_torch():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(50, 3, generator=g)
    log_var = torch.randn(50, 3, generator=g)
    target = torch.randn(50, 3, generator=g)
    m, lv, t = (a.double().numpy() for a in (mean, log_var, target))
    by_hand = np.mean(0.5 * (np.log(2 * np.pi) + lv + (t - m) ** 2 / np.exp(lv)))
    assert float(gaussian_nll(mean, log_var, target)) == pytest.approx(by_hand, rel=1e-5)
    ref = torch.nn.GaussianNLLLoss(full=True, eps=1e-12)(mean, target, log_var.exp())
    assert float(gaussian_nll(mean, log_var, target)) == pytest.approx(float(ref), rel=1e-5)
    per = gaussian_nll(mean, log_var, target, reduction="none")
    assert per.shape == (50, 3)
    assert float(gaussian_nll(mean, log_var, target, reduction="sum")) == pytest.approx(
        float(per.sum()), rel=1e-5)


def test_nll_is_minimised_at_the_true_variance():
    # E[NLL] over y ~ N(0, s^2) is smallest when the predicted variance is s^2.
    y = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(1)) * 0.7
    grid = torch.linspace(-2, 1, 31)
    losses = [float(gaussian_nll(torch.zeros_like(y), torch.full_like(y, float(v)), y))
              for v in grid]
    best = float(grid[int(np.argmin(losses))])
    assert math.exp(best) == pytest.approx(0.49, rel=0.1)


def test_beta_nll_weights_by_detached_variance():
    mean = torch.zeros(4, 1, requires_grad=True)
    log_var = torch.tensor([[0.0], [1.0], [-1.0], [2.0]])
    target = torch.ones(4, 1)
    plain = gaussian_nll(mean, log_var, target, reduction="none")
    beta = gaussian_nll(mean, log_var, target, beta=0.5, reduction="none")
    assert torch.allclose(beta, plain * torch.exp(0.5 * log_var))
    with pytest.raises(ValueError):
        gaussian_nll(mean, log_var, target, reduction="max")


def test_mixture_is_law_of_total_variance():
    means = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=torch.float64)
    variances = torch.tensor([[1.0, 0.5], [2.0, 0.5], [3.0, 0.5]], dtype=torch.float64)
    mu, var = mixture(means, variances)
    assert torch.allclose(mu, torch.tensor([2.0, 1.0], dtype=torch.float64))
    # mean of variances (2) + variance of means (8/3); identical members: unchanged
    assert torch.allclose(var, torch.tensor([2.0 + 8.0 / 3.0, 0.5], dtype=torch.float64))
    # matches sampling from the mixture
    rng = np.random.default_rng(0)
    k = rng.integers(0, 3, 400_000)
    draws = rng.normal(means[k, 0].numpy(), np.sqrt(variances[k, 0].numpy()))
    assert draws.var() == pytest.approx(float(var[0]), rel=0.02)


def test_dihedral_group_and_random_dihedral():
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    views = [dihedral(x, k) for k in range(8)]
    for i in range(8):  # eight distinct exact permutations of the pixels
        assert torch.equal(torch.sort(views[i].flatten()).values, torch.sort(x.flatten()).values)
        for j in range(i):
            assert not torch.equal(views[i], views[j])
    batch = x.repeat(64, 1, 1, 1)
    out = random_dihedral(batch, torch.Generator().manual_seed(3))
    seen = {k for k in range(8) for b in range(64) if torch.equal(out[b], views[k][0])}
    assert len(seen) == 8  # all transforms drawn, every output is one of them
    again = random_dihedral(batch, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_regressor_units_and_tta_invariance():
    torch.manual_seed(0)
    model = Regressor(["a", "b"], "small")
    model.set_standardisation([10.0, -3.0], [2.0, 0.0])  # std 0 becomes 1
    model.eval()
    x = torch.randn(3, 1, 16, 16)
    mu_s, lv_s = model(x)
    mu, var = model.predict(x)
    assert mu.shape == var.shape == (3, 2)
    assert torch.allclose(mu, mu_s.double() * torch.tensor([2.0, 1.0]) + torch.tensor([10., -3.]))
    assert torch.allclose(var, lv_s.double().exp() * torch.tensor([4.0, 1.0]))
    # TTA averages over the whole dihedral group: a rotated or flipped input gives the same
    m1, v1 = predict_tta(model, x)
    m2, v2 = predict_tta(model, dihedral(x, 5))
    assert torch.allclose(m1, m2, atol=1e-5) and torch.allclose(v1, v2, rtol=1e-4)
    assert (v1 > 0).all()
    # standardisation is part of the saved state
    clone = Regressor(["a", "b"], "small")
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.target_mean, model.target_mean)
    # an ensemble of one equals that member
    me, ve = predict_ensemble([model], x)
    assert torch.allclose(me, m1) and torch.allclose(ve, v1)


@pytest.mark.parametrize("arch,blocks", [("resnet18", 8), ("resnet34", 16)])
def test_resnet_layouts(arch, blocks):
    model = Regressor(["t"], arch)
    assert sum(1 for m in model.modules() if type(m).__name__ == "BasicBlock") == blocks
    model.eval()
    mu, lv = model(torch.randn(2, 1, 16, 16))
    assert mu.shape == lv.shape == (2, 1)
    with pytest.raises(ValueError):
        Regressor(["t"], "resnet50")


def test_group_norm_behaves_alike_in_train_and_eval():
    model = Regressor(["t"], "small", norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(4, 1, 16, 16)
    train_out = model.train()(x)[0]
    assert torch.allclose(train_out, model.eval()(x)[0], atol=1e-6)
    with pytest.raises(ValueError):
        Regressor(["t"], "small", norm="layer")
