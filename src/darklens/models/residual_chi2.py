"""The physics baseline: fit the smooth lens to every image and score what is left over.

No anomaly is ever seen. ``score`` fits the smooth model (:mod:`darklens.fit`) and reduces
the normalised residual map ``(data - model) / sigma`` to one number per image:

- ``"local"``: the largest mean of ``residual^2`` over ``window`` x ``window`` windows (a
  matched filter for a compact perturbation: background pixels no longer dilute it), divided
  by the mean ``residual^2`` of the dark pixels (model light under 1% of its peak), so that
  each image's own noise estimate cancels;
- ``"params"``: the Mahalanobis distance of the fitted macro lens (Einstein radius, centre,
  ellipticity, shear) from the training normals' (Ledoit-Wolf covariance). Substructure that
  the smooth model absorbs drags these away: it adds mass (a larger Einstein radius) and
  asymmetry (shear, ellipticity). It can only work where the normal lenses form a population
  narrower than that drag (DeepLense's fixed-lens designs); on lenses as varied as the sky's
  it carries little;
- ``"perturber"``: the linearised likelihood-ratio test for one more point mass on top of the
  smooth fit, maximised over a ``perturber_grid`` x ``perturber_grid`` grid of positions
  (:mod:`darklens.fit.perturber`);
- ``"combined"`` (default): the largest of the statistics named in ``combine`` (default
  ``local`` and ``params``), each as a robust z-score against training normals (median and
  MAD);
- ``"chi2"``: the reduced chi-square of the whole image (weak: background pixels dilute it).

``fit_start`` fits up to ``calibration_images`` training normals: the parameter distribution
comes from one half, the statistics' medians and scales from the other.

What is trained (``fit_start``, on simulations only): with ``guess="network"`` (default) the
fitter's first start comes from :class:`darklens.fit.amortised.InitialGuessNet`, trained on
``guess_images`` normal lenses simulated from ``prior`` (the data's own preset, which
``darklens train`` passes for simulator data) or, for foreign data, from
:func:`darklens.fit.amortised.generic_prior` of the instrument. ``guess="moments"`` uses only
the moment-based starts.

An image the fitter could not fit (NaN or infinite pixels, a fit that ends non-finite) gets
a NaN score; ``darklens evaluate`` and ``darklens score`` name such images and never rank
them silently.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from torch import Tensor

from darklens.fit.amortised import InitialGuessNet, generic_prior, train_initial_guess
from darklens.fit.fitter import FitOptions, SmoothFit, SmoothLensFitter, fit_smooth_lens
from darklens.fit.instrument import Instrument
from darklens.fit.perturber import perturber_statistic
from darklens.fit.smooth_model import parameter_specs
from darklens.models.base import Detector, register_detector
from darklens.simulate.presets import from_dict as preset_from_dict

STATISTICS = ("combined", "local", "params", "perturber", "chi2")
STAT_KEYS = ("chi2", "local", "params", "perturber")
# the macro lens: what substructure drags away from the normals' population when it is fitted
LENS_PARAMETERS = ("theta_e", "lens_x", "lens_y", "lens_e1", "lens_e2", "gamma1", "gamma2")
GUESSES = ("network", "moments")


def residual_statistics(fit: SmoothFit, window: int = 4) -> dict[str, np.ndarray]:
    """Per-image statistics of a fit's normalised residual maps (see the module docstring)."""
    r2 = torch.as_tensor(fit.residual, dtype=torch.float32).square().unsqueeze(1)
    light = torch.as_tensor(fit.model - fit.params["background"].reshape(-1, 1, 1))
    dark = (light < 0.01 * light.amax((1, 2), keepdim=True)).unsqueeze(1)
    dark_mean = (r2 * dark).sum((1, 2, 3)) / dark.sum((1, 2, 3)).clamp_min(1)
    local = F.avg_pool2d(r2, window, stride=max(1, window // 2)).amax((1, 2, 3))
    local = local / torch.where(dark_mean > 0, dark_mean, torch.ones_like(dark_mean))
    return {"chi2": np.asarray(fit.chi2_red, dtype=np.float64), "local": local.double().numpy()}


@register_detector
class ResidualChi2(Detector):
    """Smooth-lens fit, then a chi-square statistic of the residual (see the module docstring)."""

    name = "residual-chi2"
    uses_instrument: ClassVar[bool] = True  # `darklens train` passes --instrument or the preset's

    def __init__(self, image_size: int = 64, in_channels: int = 1,
                 instrument: dict[str, Any] | None = None, statistic: str = "combined",
                 window: int = 4, calibration_images: int = 200, guess: str = "network",
                 guess_images: int = 4000, guess_epochs: int = 8,
                 prior: dict[str, Any] | None = None, seed: int = 0,
                 combine: tuple[str, ...] | list[str] = ("local", "params"),
                 perturber_grid: int = 16, fit_options: dict[str, Any] | None = None):
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, not {statistic!r}")
        if in_channels != 1:
            raise ValueError("residual-chi2 fits one-channel images")
        combine = list(combine)
        if not combine or set(combine) - set(STAT_KEYS):
            raise ValueError(f"combine must name some of {STAT_KEYS}, not {combine!r}")
        if guess not in GUESSES:
            raise ValueError(f"guess must be one of {GUESSES}, not {guess!r}")
        inst = Instrument.from_dict(instrument) if instrument else Instrument(n_pix=image_size)
        if inst.n_pix != image_size:
            raise ValueError(f"instrument has {inst.n_pix} pixels, images {image_size}")
        super().__init__(image_size=image_size, in_channels=in_channels,
                         instrument=inst.to_dict(), statistic=statistic, window=window,
                         calibration_images=calibration_images, guess=guess,
                         guess_images=guess_images, guess_epochs=guess_epochs, prior=prior,
                         seed=seed, combine=combine, perturber_grid=perturber_grid,
                         fit_options=fit_options or {})
        self.instrument = inst
        defaults = {"moment_starts": 1} if guess == "network" else {}
        self.fit_options = FitOptions(**{**defaults, **(fit_options or {})})
        self.guess_net = InitialGuessNet(inst.n_pix, len(parameter_specs(inst))) \
            if guess == "network" else None
        self.register_buffer("guess_trained", torch.zeros((), dtype=torch.bool))
        self.report: dict[str, Any] = {}
        self.lens_columns = [i for i, spec in enumerate(parameter_specs(inst))
                             if spec.name in LENS_PARAMETERS]
        # robust centre and scale of each statistic (STAT_KEYS) on training normals, and the
        # normals' distribution of fitted parameters (mean, Ledoit-Wolf precision)
        self.register_buffer("stat_median", torch.zeros(len(STAT_KEYS), dtype=torch.float64))
        self.register_buffer("stat_scale", torch.ones(len(STAT_KEYS), dtype=torch.float64))
        self.register_buffer("param_mean", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("param_precision", torch.zeros(0, 0, dtype=torch.float64))
        self.last_fit: SmoothFit | None = None

    def fit_residuals(self, images: Tensor | np.ndarray) -> SmoothFit:
        """The smooth-lens fit of images (B, 1, H, W)."""
        guess = self.guess_net if self.guess_trained else None
        return fit_smooth_lens(images, self.instrument, self.fit_options, guess=guess)

    def train_guess(self) -> None:
        """Train the fitter's initial-guess network on simulated normal lenses."""
        if self.guess_net is None:
            return
        cfg = self.config
        prior = preset_from_dict(cfg["prior"]) if cfg["prior"] else \
            generic_prior(self.instrument)
        with torch.enable_grad():
            net, errors = train_initial_guess(self.instrument, prior, cfg["guess_images"],
                                              cfg["guess_epochs"], seed=cfg["seed"])
        self.guess_net.load_state_dict(net.state_dict())
        self.guess_net.eval()
        self.guess_trained.fill_(True)
        self.report["guess_prior"] = prior.name
        self.report["guess_validation_mae"] = errors

    def diagnostics(self) -> dict[str, Any]:
        """What ``darklens train`` records: the guess network's error, the calibration fits."""
        return dict(self.report)

    def fit_start(self, loader: Iterable) -> None:
        t0 = time.perf_counter()
        self.train_guess()
        seconds = {"guess": time.perf_counter() - t0}
        want = int(self.config["calibration_images"])
        parts, have = [], 0
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            parts.append(images[: want - have])
            have += parts[-1].shape[0]
            if have >= want:
                break
        if not parts:
            raise ValueError("residual-chi2 needs normal images to calibrate its statistics")
        calibration = torch.cat(parts)
        t0 = time.perf_counter()
        fit = self.fit_residuals(calibration)
        seconds["calibration_fits"] = time.perf_counter() - t0
        ok = fit.converged
        self.report["calibration"] = {"n": int(len(fit)), "n_converged": int(ok.sum()),
                                      "median_chi2_red": float(np.median(fit.chi2_red[ok]))
                                      if ok.any() else None}
        if ok.sum() < 8:
            raise ValueError("residual-chi2: the smooth model fits fewer than 8 of the "
                             "training normals; check --instrument")
        # the parameter distribution from one half, every statistic's scale from the other,
        # so that no normal is scored by a distribution fitted to itself
        idx = np.flatnonzero(ok)
        first, second = idx[: len(idx) // 2], idx[len(idx) // 2:]
        lw = LedoitWolf().fit(fit.u[first][:, self.lens_columns].astype(np.float64))
        self.param_mean = torch.as_tensor(lw.location_, dtype=torch.float64)
        self.param_precision = torch.as_tensor(lw.precision_, dtype=torch.float64)
        t0 = time.perf_counter()
        stats = self._statistics(fit, calibration, self._needs_perturber())
        seconds["calibration_statistics"] = time.perf_counter() - t0
        self.report["seconds"] = seconds  # where training time goes (the budget)
        for i, key in enumerate(STAT_KEYS):
            v = stats[key][second]
            med = float(np.median(v))
            self.stat_median[i] = med
            self.stat_scale[i] = max(1.4826 * float(np.median(np.abs(v - med))), 1e-12)

    def _needs_perturber(self) -> bool:
        cfg = self.config
        return cfg["statistic"] == "perturber" or (
            cfg["statistic"] == "combined" and "perturber" in cfg["combine"])

    def _statistics(self, fit: SmoothFit, images: Tensor | np.ndarray,
                    perturber: bool) -> dict[str, np.ndarray]:
        stats = residual_statistics(fit, self.config["window"])
        stats["perturber"] = np.zeros(len(fit))
        if perturber:
            fitter = SmoothLensFitter(self.instrument, self.fit_options)
            stats["perturber"] = perturber_statistic(fitter, images, fit,
                                                     self.config["perturber_grid"])["t2"]
        d = torch.as_tensor(fit.u[:, self.lens_columns], dtype=torch.float64) - self.param_mean
        stats["params"] = torch.einsum("ij,jk,ik->i", d, self.param_precision, d).numpy()
        return stats

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # the parameter statistics' shapes are set in fit_start: take the saved ones
        for name in ("param_mean", "param_precision"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def optimizer_groups(self) -> dict:
        return {}  # nothing to train

    def training_loss(self, batch: Tensor) -> Tensor:
        raise RuntimeError("residual-chi2 has nothing to train")

    @torch.no_grad()
    def score(self, images: Tensor) -> Tensor:
        fit = self.fit_residuals(images.cpu())
        self.last_fit = fit
        stats = self._statistics(fit, images.cpu(), self._needs_perturber())
        statistic = self.config["statistic"]
        if statistic == "combined":
            med, scale = self.stat_median.numpy(), self.stat_scale.numpy()
            z = [(stats[k] - med[i]) / scale[i] for i, k in enumerate(STAT_KEYS)
                 if k in self.config["combine"]]
            s = np.maximum.reduce(z)
        else:
            s = stats[statistic]
        s = np.where(fit.converged, s, np.nan)
        return torch.as_tensor(s, dtype=torch.float64)

    @torch.no_grad()
    def where_map(self, images: Tensor) -> Tensor:
        """The squared normalised residual (data - model)^2 / sigma^2 of the smooth-lens fit,
        (B, H, W); NaN where the fit failed."""
        fit = self.fit_residuals(images.cpu())
        r2 = torch.as_tensor(fit.residual, dtype=torch.float32).square()
        bad = torch.as_tensor(~np.asarray(fit.converged, dtype=bool))
        return torch.where(bad.view(-1, 1, 1), torch.full_like(r2, float("nan")), r2)
