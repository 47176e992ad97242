"""InfoNCE against a naive loop, the two entropy penalties and the semi-supervised push."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from darklens.models.losses import (
    anomaly_push_loss,
    entropy_penalty,
    infonce_loss,
    mutual_information_bound,
)


def naive_infonce(scores: torch.Tensor) -> float:
    """The issue's formula written as plain Python loops over the (K, K) critic matrix."""
    k = scores.shape[0]
    total = 0.0
    for i in range(k):
        denom = sum(math.exp(float(scores[i, j])) for j in range(k)) / k
        total += -math.log(math.exp(float(scores[i, i])) / denom)
    return total / k


@pytest.mark.parametrize("k", [1, 2, 7, 32])
@pytest.mark.parametrize("temperature", [0.05, 0.2, 1.0])
def test_infonce_matches_naive_loop(k: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(k)
    z = F.normalize(torch.randn(k, 8, generator=g, dtype=torch.float64), dim=1)
    zbar = F.normalize(z + 0.3 * torch.randn(k, 8, generator=g, dtype=torch.float64), dim=1)
    scores = z @ zbar.T / temperature
    assert infonce_loss(scores).item() == pytest.approx(naive_infonce(scores), rel=1e-10, abs=1e-10)


def test_infonce_differs_from_cross_entropy_by_log_k() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 16, generator=g, dtype=torch.float64)
    ce = F.cross_entropy(scores, torch.arange(16))
    assert (ce - infonce_loss(scores)).item() == pytest.approx(math.log(16), rel=1e-12)


def test_infonce_bound_and_stability() -> None:
    k = 8
    perfect = torch.full((k, k), -1e4, dtype=torch.float64)
    perfect.fill_diagonal_(1e4)  # would overflow exp without logsumexp
    loss = infonce_loss(perfect)
    assert torch.isfinite(loss)
    # Perfectly separated positives: the MI bound reaches its ceiling log K.
    assert mutual_information_bound(perfect).item() == pytest.approx(math.log(k), abs=1e-9)
    # Uninformative critic: the bound is zero.
    assert infonce_loss(torch.zeros(k, k)).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        infonce_loss(torch.zeros(3, 4))


def test_entropy_penalties() -> None:
    z = torch.tensor([[3.0, -4.0], [0.0, 0.0], [-1.0, 2.0]])
    assert torch.equal(entropy_penalty(z, "l2"), torch.tensor([25.0, 0.0, 5.0]))
    assert torch.equal(entropy_penalty(z, "l1"), torch.tensor([7.0, 0.0, 3.0]))
    # R is the negative log density of the reference up to a constant (and the factor 1/2 for
    # the normal): check against torch.distributions.
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1)
    laplace = torch.distributions.Laplace(0.0, 1.0).log_prob(x).sum(1)
    assert torch.allclose(-2 * normal - 3 * math.log(2 * math.pi), entropy_penalty(x, "l2"))
    assert torch.allclose(-laplace - 3 * math.log(2.0), entropy_penalty(x, "l1"))
    with pytest.raises(ValueError):
        entropy_penalty(z, "l3")


def test_anomaly_push_forms() -> None:
    r = torch.tensor([1e-3, 0.5, 2.0, 20.0], dtype=torch.float64)
    logexp = anomaly_push_loss(r, "logexp")
    assert torch.allclose(logexp, -torch.log(1 - torch.exp(-r)))
    assert torch.all(logexp[1:] < logexp[:-1])  # decreasing: pushes anomalies outward
    assert logexp[-1] < 1e-8  # and stops pushing once they are far away
    inverse = anomaly_push_loss(r, "inverse", eps=1e-6)
    assert torch.allclose(inverse, 1 / (r + 1e-6))
    assert torch.isfinite(anomaly_push_loss(torch.zeros(2), "logexp")).all()
    with pytest.raises(ValueError):
        anomaly_push_loss(r, "other")
