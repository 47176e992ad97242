"""What the smooth-lens fitter must know about the camera: pixel scale, PSF, sampling.

Three sources, recorded with every fit (``Instrument.source``):

- ``"preset"``: simulator data carry their preset, which states the pixel scale, the PSF and the
  supersampling exactly (:func:`from_preset`);
- ``"user"``: for foreign data, ``--instrument pixel_scale=0.08,psf_fwhm=0.1`` where the user
  knows them (:func:`parse_instrument`);
- ``"default"``: for foreign data the user says nothing about: a pixel scale of 0.08 arcsec
  (angles are then in units of that guess: the fit itself is scale-free up to the priors) and
  a PSF width fitted per image.

A PSF FWHM of ``None`` means "fit it per image"; the noise level is always measured from each
image's own border (``darklens.fit.noise``) unless ``noise`` gives a fixed background sigma in
the units of the stored images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from darklens.errors import DarklensError

DEFAULT_PIXEL_SCALE = 0.08
KEYS = ("pixel_scale", "psf_fwhm", "supersample", "noise", "lens_light")


@dataclass(frozen=True)
class Instrument:
    """Camera and smooth-model switches for one data set (angles in arcsec)."""

    n_pix: int
    pixel_scale: float = DEFAULT_PIXEL_SCALE
    psf_fwhm: float | None = None  # None: fitted per image
    supersample: int = 1
    noise: float | None = None  # None: measured from each image's border
    lens_light: bool = True  # model a Sersic lens light (its amplitude may fit to zero)
    source: str = "default"

    def __post_init__(self) -> None:
        if self.n_pix < 8:
            raise DarklensError(f"instrument: images of {self.n_pix} pixels are too small to fit")
        if not self.pixel_scale > 0:
            raise DarklensError(f"instrument: pixel_scale must be > 0, got {self.pixel_scale}")
        if self.psf_fwhm is not None and self.psf_fwhm < 0:
            raise DarklensError(f"instrument: psf_fwhm must be >= 0, got {self.psf_fwhm}")
        if self.supersample not in (1, 2, 3, 4):
            raise DarklensError(f"instrument: supersample must be 1-4, got {self.supersample}")
        if self.noise is not None and not self.noise > 0:
            raise DarklensError(f"instrument: noise must be > 0, got {self.noise}")

    @property
    def field_of_view(self) -> float:
        """Side of the image in arcsec."""
        return self.n_pix * self.pixel_scale

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Instrument:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise DarklensError(f"instrument: unknown keys {sorted(unknown)}")
        return cls(**values)


def from_preset(preset: Any) -> Instrument:
    """The exact instrument of a simulator preset (its PSF if fixed, else fitted)."""
    psf = preset.psf_fwhm
    fixed_psf = float(psf.low) if psf.kind == "fixed" else None
    has_light = not (preset.lens_light_amp.kind == "fixed" and preset.lens_light_amp.low == 0)
    return Instrument(n_pix=int(preset.n_pix), pixel_scale=float(preset.pixel_scale),
                      psf_fwhm=fixed_psf, supersample=int(preset.supersample),
                      lens_light=has_light, source="preset")


def parse_instrument(text: str | None, n_pix: int) -> Instrument:
    """``key=value,...`` (keys: pixel_scale, psf_fwhm, supersample, noise, lens_light).

    ``psf_fwhm=fit`` (or leaving it out) fits the PSF width per image. A malformed text raises
    ``DarklensError`` with one line that names the bad part.
    """
    if not text:
        return Instrument(n_pix=n_pix)
    values: dict[str, Any] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not raw:
            raise DarklensError(f"--instrument: {part!r} is not key=value")
        if key not in KEYS:
            raise DarklensError(f"--instrument: unknown key {key!r}; known: {', '.join(KEYS)}")
        try:
            if key == "supersample":
                values[key] = int(raw)
            elif key == "lens_light":
                if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("1", "true", "yes")
            elif key == "psf_fwhm" and raw.lower() == "fit":
                values[key] = None
            else:
                values[key] = float(raw)
        except ValueError:
            raise DarklensError(f"--instrument: bad value for {key}: {raw!r}") from None
    return Instrument(n_pix=n_pix, source="user", **values)


def instrument_for_data(text: str | None, data: Any, size: int) -> Instrument:
    """The instrument to fit ``data`` (images of ``size`` pixels) with.

    ``text`` (``--instrument``) when given (source ``"user"``); else the instrument of the
    simulator preset recorded in ``data.attrs["preset"]`` (source ``"preset"``); else the
    default (source ``"default"``). A preset of another image size than ``size`` is not used.
    """
    if text:
        return parse_instrument(text, size)
    preset = getattr(data, "attrs", {}).get("preset")
    if isinstance(preset, dict):
        from darklens.simulate.presets import from_dict as preset_from_dict

        try:
            inst = from_preset(preset_from_dict(preset))
        except (TypeError, ValueError, KeyError, DarklensError):
            inst = None  # an older or foreign preset record: fall back to the default
        if inst is not None and inst.n_pix == size:
            return inst
    return Instrument(n_pix=size)
