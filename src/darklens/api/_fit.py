"""``fit_smooth_lens``: the smooth lens (SIE + shear + Sersic light) fitted to each image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from darklens.api._arrays import ImagesLike, as_images
from darklens.data.lensdata import LensData
from darklens.errors import DarklensError, DataError
from darklens.fit.fitter import FitOptions, SmoothFit
from darklens.fit.fitter import fit_smooth_lens as _fit
from darklens.fit.instrument import Instrument, instrument_for_data, parse_instrument
from darklens.options import dataclass_from_dict


def fit_smooth_lens(images: ImagesLike | LensData,
                    instrument: str | Mapping[str, Any] | None = None, *,
                    options: Mapping[str, Any] | None = None,
                    progress: bool = False) -> SmoothFit:
    """Fit the smooth lens to every image and return the fits and their residual maps.

    The fitter of ``darklens fit`` and the ``residual-chi2`` detector: Levenberg-Marquardt on
    the pixel chi-square from several starts (docs/refit.md). What is left over,
    ``SmoothFit.residual = (data - model) / sigma``, is where substructure shows.

    Args:
        images: a LensData or one-channel images (N, 1, H, W), (N, H, W) or (H, W).
        instrument: the camera, as ``darklens fit --instrument``: a text such as
            ``"pixel_scale=0.08,psf_fwhm=0.1"`` or a dict of those keys (``pixel_scale``,
            ``psf_fwhm``, ``supersample``, ``noise``, ``lens_light``). Default: a simulated
            LensData's own preset, else a 0.08 arcsec pixel and a PSF fitted per image.
        options: ``FitOptions`` fields (``iterations``, ``batch_size``, ...).
        progress: show a progress bar.

    Returns:
        Per image: physical parameters, the model image, the normalised residual, the
        reduced chi-square and whether the fit converged (numpy arrays, first axis the image).

    Examples:
        >>> import darklens as dl
        >>> d = dl.simulate("demo", 1, seed=0, classes=["no_sub"])
        >>> fit = dl.fit_smooth_lens(d, options={"iterations": 5})  # doctest: +SKIP
        >>> fit.residual.shape  # doctest: +SKIP
        (1, 64, 64)
    """
    x = as_images(images)
    size = int(x.shape[-1])
    if isinstance(instrument, Mapping):
        inst = parse_instrument(",".join(f"{k}={_text(v)}" for k, v in instrument.items()),
                                size)
    elif isinstance(images, LensData):
        inst = instrument_for_data(instrument, images, size)
    else:
        inst = parse_instrument(instrument, size) if instrument else Instrument(n_pix=size)
    opts = dataclass_from_dict(FitOptions, dict(options or {}), "fit")
    try:
        return _fit(x, inst, opts, progress=progress)
    except ValueError as err:
        raise DataError(f"fit_smooth_lens: {err}") from None
    except TypeError as err:
        raise DarklensError(f"fit_smooth_lens: bad options ({err})") from None


def _text(value: Any) -> str:
    """A value as the ``--instrument`` text writes it (None: fit the PSF)."""
    if value is None:
        return "fit"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
