"""A network that guesses the smooth lens from the image: the fitter's first start.

Least squares from a poor start stops in local minima (on the 64x64 ``model-a``, half of the
normal lenses with moment-based starts). The simulator knows the parameters of every image it
renders, so a small CNN trained on ``no_sub`` simulations to predict the fitter's unconstrained
parameters costs no labels; its guess lands in the right basin and a few Levenberg-Marquardt
iterations finish the job.

Which simulations: the data's own preset where the data came from darklens's simulator, else
:func:`generic_prior`, broad priors over the instrument's field of view (for foreign data).
The network keeps absolute position (strided convolutions, then a dense layer over the whole
map: no global pooling), since the lens centre and the arcs' positions are what it predicts.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor, nn

from darklens.fit.instrument import Instrument
from darklens.fit.smooth_model import E_MAX, parameter_specs, to_unconstrained
from darklens.simulate import physics
from darklens.simulate.presets import DEMO, Preset
from darklens.simulate.priors import fixed, uniform


def generic_prior(inst: Instrument) -> Preset:
    """Broad priors over the instrument's field for lenses whose preset is unknown."""
    fov = inst.field_of_view
    psf = fixed(inst.psf_fwhm) if inst.psf_fwhm is not None else \
        uniform(0.5 * inst.pixel_scale, 3.0 * inst.pixel_scale)
    return dataclasses.replace(
        DEMO, name="fit-prior", description="broad smooth-lens prior for the fitter's guess",
        n_pix=inst.n_pix, pixel_scale=inst.pixel_scale, supersample=max(inst.supersample, 1),
        theta_e=uniform(0.12 * fov, 0.3 * fov), lens_q=uniform(0.5, 1.0),
        lens_center=uniform(-0.03 * fov, 0.03 * fov), shear_gamma=uniform(0.0, 0.12),
        source_r_eff=uniform(0.01 * fov, 0.06 * fov), source_n=uniform(0.6, 3.0),
        source_q=uniform(0.5, 1.0), source_phi=uniform(0.0, math.pi),
        source_offset_kind="radial", source_offset=uniform(0.0, 0.06 * fov),
        lens_light_amp=uniform(0.0, 3.0) if inst.lens_light else fixed(0.0),
        lens_light_r_eff=uniform(0.03 * fov, 0.12 * fov), lens_light_n=uniform(1.0, 4.0),
        lens_light_q=uniform(0.5, 1.0), psf_fwhm=psf, snr=uniform(20.0, 200.0))


def _ellipticity(q: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = (1 - q) / (1 + q)
    return e * np.cos(2 * phi), e * np.sin(2 * phi)


def targets_from_metadata(meta: dict[str, np.ndarray], inst: Instrument) -> Tensor:
    """The fitter's unconstrained parameters (N, K) of simulated images, from their metadata."""
    t = {k: np.asarray(v, dtype=np.float64) for k, v in meta.items()}
    le1, le2 = _ellipticity(t["lens_q"], t["lens_phi"])
    se1, se2 = _ellipticity(t["source_q"], t["source_phi"])
    ge1, ge2 = _ellipticity(t["lens_light_q"], t["lens_phi"])
    g1, g2 = physics.shear_components(torch.as_tensor(t["shear_gamma"]),
                                      torch.as_tensor(t["shear_angle"]))
    phys = {
        "theta_e": t["theta_e"], "lens_x": t["lens_center_x"], "lens_y": t["lens_center_y"],
        "lens_e1": le1, "lens_e2": le2, "gamma1": g1.numpy(), "gamma2": g2.numpy(),
        "source_x": t["source_x"], "source_y": t["source_y"],
        "source_r_eff": t["source_r_eff"], "source_n": t["source_n"],
        "source_e1": se1, "source_e2": se2,
        "light_r_eff": t["lens_light_r_eff"], "light_n": t["lens_light_n"],
        "light_e1": ge1, "light_e2": ge2, "psf_fwhm": t["psf_fwhm"],
    }
    phys = {k: torch.as_tensor(np.clip(v, -E_MAX, E_MAX) if k.endswith(("_e1", "_e2")) else v)
            for k, v in phys.items()}
    return to_unconstrained(phys, parameter_specs(inst))


class InitialGuessNet(nn.Module):
    """Image (B, 1, H, W), min-max scaled -> unconstrained smooth-lens parameters (B, K)."""

    def __init__(self, n_pix: int, n_params: int, width: int = 32):
        super().__init__()
        layers, c, size = [], 1, n_pix
        for out in (width, width, 2 * width, 2 * width):
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.GELU()]
            c, size = out, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * size * size, 256), nn.GELU(),
                                  nn.Linear(256, n_params))

    @staticmethod
    def prepare(images: Tensor) -> Tensor:
        x = images.float()
        lo = x.amin((-2, -1), keepdim=True)
        hi = x.amax((-2, -1), keepdim=True)
        return (x - lo) / (hi - lo).clamp_min(1e-12)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(self.prepare(images)))


def train_initial_guess(inst: Instrument, prior: Preset, n_images: int = 6000,
                        epochs: int = 12, seed: int = 0, batch_size: int = 64,
                        lr: float = 2e-3) -> tuple[InitialGuessNet, dict[str, float]]:
    """Simulate ``n_images`` normal lenses from ``prior`` and train the guess on them.

    Returns the network (eval mode) and its mean absolute error per parameter, in the
    unconstrained units, on 10% of the simulations held out.
    """
    from darklens.simulate.simulator import simulate_dataset

    prior = dataclasses.replace(prior, n_pix=inst.n_pix, pixel_scale=inst.pixel_scale)
    data = simulate_dataset(prior, n_images, seed=seed, classes=("no_sub",))
    x = torch.as_tensor(data.images)
    y = targets_from_metadata(data.metadata, inst)
    n_val = max(1, n_images // 10)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = InitialGuessNet(inst.n_pix, y.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil((n_images - n_val) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    xt, yt = x[n_val:], y[n_val:]
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(xt.shape[0], generator=gen).split(batch_size):
            loss = nn.functional.smooth_l1_loss(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        err = (net(x[:n_val]) - y[:n_val]).abs().mean(0)
    names = [s.name for s in parameter_specs(inst)]
    return net, {n: float(e) for n, e in zip(names, err, strict=True)}
