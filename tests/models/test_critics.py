"""The three critics: shape (K, M) and one defining property each."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from darklens.models.critics import (
    BilinearCritic,
    CosineCritic,
    MLPCritic,
    ProjectionHead,
    make_critic,
)

G = torch.Generator().manual_seed(0)
Z = torch.randn(6, 5, generator=G) * 3
ZBAR = torch.randn(4, 5, generator=G) * 3


@pytest.mark.parametrize("kind", ["cosine", "bilinear", "mlp", "dot"])
@pytest.mark.parametrize("normalise", [False, True])
def test_critic_shape_and_gradient(kind: str, normalise: bool) -> None:
    critic = make_critic(kind, dim=5, temperature=0.5, normalise=normalise)
    z = Z.clone().requires_grad_(True)
    scores = critic(z, ZBAR)
    assert scores.shape == (6, 4)
    assert torch.isfinite(scores).all()
    scores.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_cosine_bounded_by_inverse_temperature(temperature: float) -> None:
    scores = CosineCritic(temperature)(Z, ZBAR)
    assert scores.abs().max() <= 1 / temperature + 1e-5
    # Self-similarity reaches the bound and the norm of z does not matter.
    self_scores = CosineCritic(temperature)(Z, 7 * Z)
    assert torch.allclose(torch.diagonal(self_scores), torch.full((6,), 1 / temperature))
    with pytest.raises(ValueError):
        CosineCritic(0.0)


def test_bilinear_identity_is_dot_product() -> None:
    assert torch.allclose(BilinearCritic(5)(Z, ZBAR), Z @ ZBAR.T)
    normed = BilinearCritic(5, normalise=True)(Z, ZBAR)
    assert torch.allclose(normed, F.normalize(Z, dim=1) @ F.normalize(ZBAR, dim=1).T)


def test_mlp_critic_equals_mlp_on_concatenated_pair() -> None:
    critic = MLPCritic(5, hidden=16)
    scores = critic(Z, ZBAR)
    # The split first layer is the same as Linear on the concatenated pair [z_i; zbar_j].
    w = torch.cat([critic.left.weight, critic.right.weight], dim=1)
    for i in range(Z.shape[0]):
        for j in range(ZBAR.shape[0]):
            first = torch.cat([Z[i], ZBAR[j]]) @ w.T + critic.left.bias
            assert torch.allclose(critic.out(first).squeeze(), scores[i, j], atol=1e-5)


def test_projection_head_and_unknown_critic() -> None:
    assert ProjectionHead(5, 3)(Z).shape == (6, 3)
    with pytest.raises(ValueError):
        make_critic("attention", dim=5)


def test_dot_critic_is_the_raw_dot_product_and_sees_the_norm() -> None:
    critic = make_critic("dot", dim=5, temperature=0.5)
    assert torch.allclose(critic(Z, ZBAR), Z @ ZBAR.T / 0.5)
    assert torch.allclose(critic(2 * Z, ZBAR), 2 * critic(Z, ZBAR))
    assert not list(critic.parameters())  # no learned scale to absorb a shrinking z
