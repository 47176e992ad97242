"""Losses of the information-theoretic detector, as pure functions of tensors.

The detector minimises (seed proposal; Ye et al. 2020, arXiv:2012.04837)

    L = (1/K) sum_i [ -log( exp f(z_i, zbar_i) / ((1/K) sum_j exp f(z_i, zbar_j)) ) + beta R(z_i) ]

over a batch of K images, where zbar_i is the representation of an independently augmented view
of image i and f is a critic (``darklens.models.critics``). The first term is the negative of the
InfoNCE (CPC) lower bound on the mutual information I(X, Z); the second bounds the entropy H(Z)
with a reference density r(z) ~ exp(-R(z)).

Note on the ``1/K`` inside the logarithm: it makes ``-infonce_loss`` a lower bound on I(X, Z)
that can never exceed ``log K``. The familiar cross-entropy form (``F.cross_entropy(scores,
arange(K))``) lacks it and is larger by exactly ``log K``; the gradients are identical.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PENALTIES: tuple[str, ...] = ("l2", "l1")


def infonce_loss(scores: Tensor) -> Tensor:
    """InfoNCE loss from a (K, K) critic matrix ``scores[i, j] = f(z_i, zbar_j)``.

    Returns ``(1/K) sum_i [ -scores[i, i] + log((1/K) sum_j exp scores[i, j]) ]``, computed with
    ``logsumexp`` so that large critic values do not overflow. Its negative is the CPC lower
    bound on I(X, Z), so the loss lies in ``[-log K, inf)``.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (K, K) matrix, got shape {tuple(scores.shape)}")
    k = scores.shape[0]
    positives = torch.diagonal(scores)
    log_mean_exp = torch.logsumexp(scores, dim=1) - math.log(k)
    return (log_mean_exp - positives).mean()


def mutual_information_bound(scores: Tensor) -> Tensor:
    """The InfoNCE lower bound on I(X, Z) in nats (at most ``log K``): ``-infonce_loss``."""
    return -infonce_loss(scores)


def entropy_penalty(z: Tensor, kind: str = "l2") -> Tensor:
    """Per-sample R(z), shape (B,), for a reference density r(z) ~ exp(-R(z)).

    ``"l2"``: R(z) = ||z||_2^2, a standard normal reference (up to the factor 1/2 and a constant).
    ``"l1"``: R(z) = ||z||_1, a standard Laplace reference (up to a constant).
    ``z`` is (B, D); larger dimensions are flattened.
    """
    flat = z.flatten(start_dim=1)
    if kind == "l2":
        return flat.pow(2).sum(dim=1)
    if kind == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown entropy penalty {kind!r}; choose one of {PENALTIES}")


SEMI_FORMS: tuple[str, ...] = ("logexp", "inverse")


def anomaly_push_loss(
    penalty: Tensor, form: str = "logexp", eps: float = 1e-6
) -> Tensor:
    """Per-sample loss pushing labelled anomalies away from the reference mode, shape (B,).

    ``penalty`` holds R(z_a) of labelled anomalies. Forms:

    - ``"logexp"`` (default): ``-log(1 - exp(-R))``. Read ``exp(-R(z))`` as the probability
      that z is normal (the reference density scaled to peak 1). Then the normal data's
      cross-entropy ``-log exp(-R) = R`` is exactly the entropy penalty already in the
      unsupervised loss, and this term is the matching cross-entropy of an anomaly. It is
      large near the mode (~ -log R) and decays like exp(-R) once an anomaly is far away, so
      anomalies are pushed out but norms are not driven to infinity.
    - ``"inverse"``: Deep SAD's ``1 / (R + eps)`` (Ruff et al. 2020). It keeps pushing with a
      1/R tail, which can inflate the norms of everything the encoder maps near anomalies.

    Computed stably: ``-log(1 - exp(-R)) = -log(-expm1(-R))`` with R clamped at ``eps``.
    """
    r = penalty.clamp_min(eps)
    if form == "logexp":
        return -torch.log(-torch.expm1(-r))
    if form == "inverse":
        return 1.0 / (r + eps)
    raise ValueError(f"unknown semi-supervised form {form!r}; choose one of {SEMI_FORMS}")
