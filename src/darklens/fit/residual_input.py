"""Residual maps of the smooth-lens fit as the input of any learned detector.

``darklens train --input residual`` fits the smooth lens (:mod:`darklens.fit.fitter`) to every
image and trains the detector on what is left over, the normalised residual map
``(data - model) / sigma``, instead of on the image: the lens, the source and the noise level
are taken out, so that what a detector has to learn is the noise and whatever the smooth model
cannot explain. ``darklens evaluate`` and ``darklens score`` apply the same transform, from the
same instrument, fit options and initial-guess network, recorded in the run directory:

    RUN/residual_input.pt   state_dict of the fitter's InitialGuessNet (if one was trained)
    RUN/config.json         "input": {"kind": "residual", ... ResidualInput.save()'s record}

The maps are clipped to ``[-clip, clip]`` (default 20 sigma), so that one bad pixel or a badly
failed fit cannot dominate a network's input. An image the fitter could not fit (NaN or
infinite pixels) gets a zero map and ``fitted`` False: the commands give it a NaN score, which
they name and never rank.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darklens.errors import CheckpointError, DarklensError, DataError
from darklens.fit.amortised import InitialGuessNet, generic_prior, train_initial_guess
from darklens.fit.fitter import FitOptions, fit_smooth_lens
from darklens.fit.instrument import Instrument
from darklens.fit.pseudo_anomalies import perturbed_fits
from darklens.fit.smooth_model import parameter_specs
from darklens.io import atomic_path

FILE = "residual_input.pt"
DEFAULT_CLIP = 20.0
KIND = "residual"
#: keys of ``darklens train --input-options``
OPTION_KEYS = ("guess_images", "guess_epochs", "clip", "fit_options", "pseudo_anomalies")


def fit_options(values: dict[str, Any] | None, guess: bool) -> FitOptions:
    """FitOptions from a dict; with a trained guess one moment-based start is enough (as in
    residual-chi2). Unknown keys raise ``DarklensError``."""
    known = {f.name for f in dataclasses.fields(FitOptions)}
    values = dict(values or {})
    unknown = set(values) - known
    if unknown:
        raise DarklensError(f"fit_options: unknown keys {sorted(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    defaults = {"moment_starts": 1} if guess else {}
    try:
        return FitOptions(**{**defaults, **values})
    except (TypeError, ValueError) as err:
        raise DarklensError(f"fit_options: {err}") from err


class ResidualInput:
    """Image -> clipped normalised residual map of its smooth-lens fit (see the module docstring).

    ``inst``: the instrument to fit with; ``options``: FitOptions fields (dict); ``guess``: a
    trained :class:`InitialGuessNet` (the fitter's first start) or None (moment-based starts
    only); ``record``: what ``save`` records about how the guess was trained.
    """

    def __init__(self, inst: Instrument, options: dict[str, Any] | None = None,
                 guess: InitialGuessNet | None = None, clip: float = DEFAULT_CLIP,
                 record: dict[str, Any] | None = None):
        if not clip > 0:
            raise DarklensError(f"residual input: clip must be > 0, got {clip}")
        self.inst = inst
        self.options = fit_options(options, guess is not None)
        self.option_values = dict(options or {})
        self.guess = guess.eval() if guess is not None else None
        self.clip = float(clip)
        self.record = dict(record or {})
        self.fitted = np.zeros(0, dtype=bool)  # per image of the last call: could it be fitted

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def prepare(cls, inst: Instrument, prior: Any = None, seed: int = 0,
                guess_images: int = 4000, guess_epochs: int = 8,
                options: dict[str, Any] | None = None,
                clip: float = DEFAULT_CLIP) -> ResidualInput:
        """Train the fitter's initial-guess network and return the transform.

        ``prior``: the simulator preset of the data (a ``Preset`` or its ``to_dict`` record,
        e.g. ``data.attrs["preset"]``), else None for :func:`generic_prior` of ``inst``.
        ``guess_images=0`` trains nothing: the fit starts from moment-based guesses only.
        """
        fit_options(options, guess_images > 0)  # a bad option fails before minutes of training
        if guess_images < 0 or guess_epochs < 1:
            raise DarklensError("residual input: guess_images must be >= 0 and guess_epochs >= 1")
        record: dict[str, Any] = {"guess_images": int(guess_images),
                                  "guess_epochs": int(guess_epochs), "seed": int(seed)}
        if guess_images == 0:
            return cls(inst, options, None, clip, {**record, "prior": None})
        if isinstance(prior, dict):
            from darklens.simulate.presets import from_dict as preset_from_dict

            prior = preset_from_dict(prior)
        if prior is None:
            prior = generic_prior(inst)
        with torch.enable_grad():
            net, errors = train_initial_guess(inst, prior, int(guess_images), int(guess_epochs),
                                              seed=int(seed))
        record.update(prior=prior.name, guess_validation_mae=errors)
        return cls(inst, options, net, clip, record)

    # -- the transform ------------------------------------------------------------------------
    def __call__(self, images: np.ndarray | torch.Tensor, progress: bool = False) -> np.ndarray:
        """Clipped residual maps (N, 1, H, W) float32 of images (N, 1, H, W) (or (N, H, W)).

        Sets ``self.fitted`` (N,) bool: False where the fitter could not fit the image (NaN or
        infinite pixels; its map is zero). Images are fitted a batch at a time, so memory holds
        only the maps, not the fits.
        """
        return self._maps(images, progress, None)[0]

    def with_pseudo(self, images: np.ndarray | torch.Tensor, pseudo_seed: int,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The residual maps of ``images`` (as ``__call__``) and of their pseudo-anomalies:
        each image with random point masses added through its own fitted lens
        (:mod:`darklens.fit.pseudo_anomalies`), fitted again. Both (N, 1, H, W); an image not
        fitted has zero maps and ``self.fitted`` False (leave its pseudo-anomaly out)."""
        maps, pseudo = self._maps(images, progress, np.random.default_rng(int(pseudo_seed)))
        assert pseudo is not None
        return maps, pseudo

    def _maps(self, images: np.ndarray | torch.Tensor, progress: bool,
              pseudo_rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(images.numpy() if isinstance(images, torch.Tensor) else images)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] != 1:
            raise DataError(f"residual input: expected one-channel images (N, 1, H, W), "
                                f"got shape {x.shape}")
        if x.shape[-1] != self.inst.n_pix or x.shape[-2] != self.inst.n_pix:
            raise DataError(f"residual input: images of {x.shape[-2]}x{x.shape[-1]} pixels, "
                                f"the instrument has {self.inst.n_pix}")
        n = x.shape[0]
        out = np.zeros(x.shape, dtype=np.float32)
        pseudo = np.zeros(x.shape, dtype=np.float32) if pseudo_rng is not None else None
        fitted = np.zeros(n, dtype=bool)
        step = max(1, int(self.options.batch_size))
        bar = None
        if progress and n:
            from tqdm import tqdm

            what = "fitting the smooth lens" + (" (and pseudo-anomalies)" if pseudo_rng else "")
            bar = tqdm(total=n, desc=what, unit="image")
        with torch.no_grad():
            for lo in range(0, n, step):
                chunk = x[lo:lo + step]
                fit = fit_smooth_lens(chunk, self.inst, self.options, guess=self.guess)
                out[lo:lo + step, 0] = self._clipped(fit.residual)
                fitted[lo:lo + step] = fit.converged
                if pseudo is not None and pseudo_rng is not None:
                    moved = perturbed_fits(chunk, fit, self.inst, pseudo_rng)
                    refit = fit_smooth_lens(moved, self.inst, self.options, guess=self.guess)
                    pseudo[lo:lo + step, 0] = self._clipped(refit.residual)
                    fitted[lo:lo + step] &= refit.converged
                if bar is not None:
                    bar.update(len(fit))
        if bar is not None:
            bar.close()
        self.fitted = fitted
        return out, pseudo

    def _clipped(self, residual: np.ndarray) -> np.ndarray:
        res = np.nan_to_num(residual.astype(np.float32), nan=0.0)
        return np.clip(res, -self.clip, self.clip)

    # -- persistence --------------------------------------------------------------------------
    def save(self, run_dir: str | os.PathLike) -> dict[str, Any]:
        """Write the guess network to ``run_dir/residual_input.pt`` (atomically; nothing when
        there is none) and return the JSON-able record ``load`` rebuilds this from."""
        info: dict[str, Any] = {"instrument": self.inst.to_dict(),
                                "fit_options": dict(self.option_values),
                                "clip": self.clip, "guess": self.guess is not None,
                                **self.record}
        if self.guess is not None:
            with atomic_path(Path(run_dir) / FILE) as tmp:
                torch.save({k: v.detach().cpu() for k, v in self.guess.state_dict().items()}, tmp)
            info["file"] = FILE
        return info

    @classmethod
    def load(cls, run_dir: str | os.PathLike, info: dict[str, Any]) -> ResidualInput:
        """The transform recorded in ``info`` (config.json's ``input``) and ``run_dir``;
        ``CheckpointError`` when the record or the weights cannot be used."""
        from darklens.safe_load import load_state_into

        where = Path(run_dir) / "config.json"
        try:
            inst = Instrument.from_dict(dict(info["instrument"]))
            options = dict(info.get("fit_options") or {})
            clip = float(info.get("clip", DEFAULT_CLIP))
            has_guess = bool(info.get("guess", False))
            record = {k: v for k, v in info.items()
                      if k not in ("instrument", "fit_options", "clip", "guess", "file", "kind")}
            guess = InitialGuessNet(inst.n_pix, len(parameter_specs(inst))) if has_guess \
                else None
            if guess is not None:
                load_state_into(guess, Path(run_dir) / str(info.get("file", FILE)),
                                "the fitter's initial-guess network",
                                missing="missing (the residual input's initial-guess network)")
            return cls(inst, options, guess, clip, record)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, DarklensError) as err:
            raise CheckpointError(f"{where}: bad residual input record ({err})") from err


def input_record(config: dict[str, Any]) -> dict[str, Any]:
    """A run's ``input`` record (``{"kind": "raw"}`` for runs from before ``--input``)."""
    rec = config.get("input") or {"kind": "raw"}
    if not isinstance(rec, dict) or rec.get("kind") not in ("raw", KIND):
        raise CheckpointError(f"config.json: unknown input {rec!r} (expected raw or residual)")
    return rec


def load_for_run(run_dir: str | os.PathLike, config: dict[str, Any]) -> ResidualInput | None:
    """The run's residual transform, or None for a run trained on raw images."""
    rec = input_record(config)
    return ResidualInput.load(run_dir, rec) if rec["kind"] == KIND else None
