"""Pseudo-anomalies for any data, simulated or not: each normal's own fitted lens, perturbed.

A learned detector trained on normal images only has nothing to tell it what substructure
looks like; a label-free choice of score or epoch needs anomalies that no labelled image
provides. For data darklens simulated, :mod:`darklens.simulate.pseudo` re-renders the same
lens with point masses. Foreign images carry no simulation record, but their smooth-lens fit
is a model of each lens: this module adds, to each normal image, the change that point-mass
perturbers would make to its *fitted* lens,

    x' = x + A_src * [ PSF * S(beta(x) - alpha_pert(x)) - PSF * S(beta(x)) ],

with ``S`` the fitted source, ``beta`` the fitted smooth lens equation, ``A_src`` the fitted
source amplitude and ``alpha_pert`` the exact (not linearised) deflection of the perturbers.
The image keeps its own noise field, lens light and background; only the lensed source moves.
The perturbers follow the broad prior of :func:`darklens.simulate.pseudo.point_perturbers`
(deliberately not any preset's CDM or vortex prior), placed around the fitted Einstein ring.

Refitted like any image, such a pseudo-anomaly leaves the residual that a real perturber of
that mass would leave after the smooth model has absorbed what it can.
"""

from __future__ import annotations

import numpy as np
import torch

from darklens.fit.fitter import SmoothFit
from darklens.fit.instrument import Instrument
from darklens.fit.smooth_model import SmoothRenderer
from darklens.simulate import physics
from darklens.simulate.pseudo import point_perturbers


def perturbers_for(fit: SmoothFit, gen: np.random.Generator, max_perturbers: int = 3,
                   fraction: tuple[float, float] = (0.003, 0.1),
                   radius: tuple[float, float] = (0.6, 1.4)) -> dict[str, np.ndarray]:
    """Random point masses around each fitted Einstein ring
    (:func:`darklens.simulate.pseudo.point_perturbers` of the fitted radius and centre)."""
    return point_perturbers(np.asarray(fit.params["theta_e"], dtype=np.float64),
                            np.asarray(fit.params["lens_x"], dtype=np.float64),
                            np.asarray(fit.params["lens_y"], dtype=np.float64), gen,
                            max_perturbers, fraction, radius)


@torch.no_grad()
def with_perturbers(images: np.ndarray, fit: SmoothFit, inst: Instrument,
                    perturbers: dict[str, np.ndarray]) -> np.ndarray:
    """``images`` (N, H, W) or (N, 1, H, W), fitted by ``fit``, plus the change that
    ``perturbers`` (``theta_e``, ``x``, ``y`` (N, S), arcsec, NaN for none) make to their
    fitted lens (see the module docstring); same shape, float32. Images the fit could not take
    (``fit.converged`` False) are returned unchanged."""
    x = np.asarray(images, dtype=np.float32)
    flat = x.reshape(len(fit), -1)
    renderer = SmoothRenderer(inst)
    p, bx, by = renderer.source_plane(torch.as_tensor(fit.u, dtype=torch.float32))

    def column(name: str) -> torch.Tensor:  # NaN (no perturber) -> 0, which deflects nothing
        return torch.as_tensor(np.nan_to_num(perturbers[name]), dtype=torch.float32)

    ax, ay = physics.point_masses_deflection(renderer.x, renderer.y, column("theta_e"),
                                             column("x"), column("y"))
    both = torch.stack([renderer.source_light(p, bx, by),
                        renderer.source_light(p, bx - ax, by - ay)], 1)
    observed = renderer.observe(both, p)  # (N, 2, P): unit-amplitude source, PSF applied
    amp = torch.as_tensor(fit.params["source_amp"], dtype=torch.float32).view(-1, 1)
    delta = (amp * (observed[:, 1] - observed[:, 0])).numpy()
    ok = np.asarray(fit.converged, dtype=bool) & np.isfinite(delta).all(1)
    out = flat.copy()
    out[ok] += delta[ok]
    return out.reshape(x.shape)


def perturbed_fits(images: np.ndarray, fit: SmoothFit, inst: Instrument,
                   gen: np.random.Generator, max_perturbers: int = 3) -> np.ndarray:
    """``images`` with random point masses (:func:`perturbers_for`) added through their
    fitted lens (:func:`with_perturbers`)."""
    return with_perturbers(images, fit, inst, perturbers_for(fit, gen, max_perturbers))
