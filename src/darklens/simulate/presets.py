"""Named priors over every simulation parameter.

Each preset is one ``Preset`` value; ``docs/presets.md`` tabulates them with the source of every
number. ``get_preset(name, overrides)`` returns a copy with ``field=value`` overrides applied
(priors as ``VALUE`` or ``KIND:LOW:HIGH``), so any run can say exactly what it simulated.

Units: angles in arcsec, masses in solar masses, fluxes in counts/s (per pixel for images,
per arcsec^2 for Sersic amplitudes), exposure in seconds, axion masses in eV.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from darklens.simulate.priors import Prior, fixed, loguniform, uniform


@dataclass(frozen=True)
class Preset:
    """A prior over every parameter of a lensing image; see the module docstring for units."""

    name: str
    description: str
    # image and cosmology
    n_pix: int = 64
    pixel_scale: float = 0.08
    supersample: int = 2
    z_lens: float = 0.5
    z_source: float = 1.0
    distance_convention: str = "angular"  # or "deeplense-luminosity"
    # main lens: SIE + external shear; theta_e from `lens_mass` when that is given
    lens_mass: Prior | None = None
    theta_e: Prior = field(default_factory=lambda: uniform(1.0, 1.4))
    lens_q: Prior = field(default_factory=lambda: uniform(0.7, 1.0))
    lens_phi: Prior = field(default_factory=lambda: uniform(0.0, 3.141592653589793))
    lens_center: Prior = field(default_factory=lambda: uniform(-0.05, 0.05))
    shear_gamma: Prior = field(default_factory=lambda: uniform(0.0, 0.05))
    shear_angle: Prior = field(default_factory=lambda: uniform(0.0, 3.141592653589793))
    # lens light (Sersic); amplitude 0 switches it off
    lens_light_amp: Prior = field(default_factory=lambda: fixed(0.0))
    lens_light_r_eff: Prior = field(default_factory=lambda: fixed(0.5))
    lens_light_n: Prior = field(default_factory=lambda: fixed(2.5))
    lens_light_q: Prior = field(default_factory=lambda: uniform(0.5, 1.0))
    # source (elliptical Sersic); brightness from `source_magnitude` when given, else amplitude
    source_amp: Prior = field(default_factory=lambda: fixed(1.0))
    source_magnitude: Prior | None = None
    zero_point: float = 25.0
    source_r_eff: Prior = field(default_factory=lambda: uniform(0.15, 0.35))
    source_n: Prior = field(default_factory=lambda: uniform(0.7, 1.5))
    source_q: Prior = field(default_factory=lambda: uniform(0.6, 1.0))
    source_phi: Prior = field(default_factory=lambda: uniform(0.0, 3.141592653589793))
    source_offset_kind: str = "radial"  # "radial": r ~ prior, angle uniform; "box": x, y ~ prior
    source_offset: Prior = field(default_factory=lambda: uniform(0.0, 0.3))
    # CDM subhalos
    cdm_profile: str = "point"  # "point" or "tnfw"
    cdm_count: float = 8.0  # mean number of subhalos
    cdm_count_poisson: bool = True  # Poisson count, else exactly round(cdm_count)
    cdm_mass_kind: str = "powerlaw"  # "powerlaw" (masses) or "fraction" (equal shares of f_sub)
    cdm_mass_min: float = 1e9
    cdm_mass_max: float = 1e10
    cdm_slope: float = -0.9  # dN/dm ~ m**slope
    cdm_fraction: Prior = field(default_factory=lambda: fixed(0.01))  # of the Einstein mass
    cdm_radius: Prior = field(default_factory=lambda: uniform(0.7, 1.7))  # from the lens centre
    cdm_concentration: Prior = field(default_factory=lambda: uniform(10.0, 30.0))
    cdm_truncation: Prior = field(default_factory=lambda: fixed(5.0))  # r_trunc / r_s
    # vortex: a line mass (or a chain of `vortex_points` point masses)
    vortex_profile: str = "line"  # "line" or "points"
    vortex_points: int = 25
    vortex_mass_kind: str = "mass"  # "mass" (M_sun) or "fraction" (of the Einstein mass)
    vortex_mass: Prior = field(default_factory=lambda: uniform(1e10, 3e10))
    vortex_fraction: Prior = field(default_factory=lambda: fixed(0.01))
    vortex_length_kind: str = "fixed"  # "fixed" (vortex_length) or "axion" (from axion_mass)
    vortex_length: Prior = field(default_factory=lambda: uniform(0.6, 1.5))
    axion_mass: Prior = field(default_factory=lambda: loguniform(1e-24, 1e-22))
    vortex_center: Prior = field(default_factory=lambda: uniform(0.0, 0.8))  # radial offset
    # instrument
    psf_fwhm: Prior = field(default_factory=lambda: fixed(0.12))  # 0 switches the PSF off
    noise: str = "snr"  # "snr" (Gaussian, S/N drawn), "counts" (Poisson + background), "none"
    snr: Prior = field(default_factory=lambda: uniform(40.0, 80.0))
    exposure_time: Prior = field(default_factory=lambda: fixed(1000.0))
    sky_level: float = 0.0  # counts/s per pixel (Poisson)
    background_rms: float = 0.0  # counts/s per pixel (Gaussian)
    read_noise: float = 0.0  # electrons per exposure
    num_exposures: int = 1
    normalisation: str = "minmax"  # "minmax" per image (DeepLense) or "flux" (counts/s)

    def to_dict(self) -> dict:
        """JSON-able form; priors as their text form."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_text() if isinstance(v, Prior) else v
        return out


def _prior_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(Preset) if "Prior" in str(f.type)}


def from_dict(values: dict) -> Preset:
    """Rebuild a preset from :meth:`Preset.to_dict` output."""
    priors = _prior_fields()
    kwargs = {
        k: (Prior.parse(v) if k in priors and v is not None else v) for k, v in values.items()
    }
    return Preset(**kwargs)


def with_overrides(preset: Preset, overrides: dict[str, str] | None) -> Preset:
    """Copy of ``preset`` with fields replaced; values are text as from the command line."""
    if not overrides:
        return preset
    fields = {f.name: f for f in dataclasses.fields(Preset)}
    priors = _prior_fields()
    changes: dict = {}
    for key, text in overrides.items():
        if key not in fields or key == "name":
            raise KeyError(f"unknown preset field {key!r}")
        current = getattr(preset, key)
        if key in priors:
            changes[key] = None if str(text).lower() == "none" else Prior.parse(text)
        elif isinstance(current, bool):
            changes[key] = str(text).lower() in ("1", "true", "yes")
        elif isinstance(current, int):
            changes[key] = int(text)
        elif isinstance(current, float):
            changes[key] = float(text)
        else:
            changes[key] = str(text)
    return dataclasses.replace(preset, **changes)


PI = 3.141592653589793

# DeepLense Model A (PyAutoLens, 2020), as the public generator (`lensing/gen_data_*.py`,
# `get_params.py`) draws it; see docs/presets.md, "How model-a was calibrated".
# PyAutoLens evaluates Sersic intensities per pixel (e-/s), ours are per arcsec^2: divide by
# the pixel area 0.05^2. It reads angles in degrees, and the public parameter file draws them
# from U[0, 2 pi], so orientations of the lens light, the source and the shear span 0-6.3 deg.
_DEG_2PI = 2 * 3.141592653589793 * 3.141592653589793 / 180  # 2 pi degrees, in radians
MODEL_A = Preset(
    name="model-a",
    description="DeepLense Model A-like: 150x150, SIS + shear, Sersic lens light, 25 equal "
    "point-mass subhalos (f_sub 0.05, calibrated on the published 2020 scores), vortex of 25 "
    "points on a 1 arcsec segment.",
    n_pix=150,
    pixel_scale=0.05,
    supersample=2,
    theta_e=fixed(1.2),
    lens_q=fixed(1.0),
    lens_phi=uniform(0.0, _DEG_2PI),
    lens_center=fixed(0.0),
    shear_gamma=uniform(0.0, 0.3),
    shear_angle=uniform(0.0, _DEG_2PI),
    lens_light_amp=fixed(1.2 / 0.05**2),
    lens_light_r_eff=fixed(0.5),
    lens_light_n=fixed(2.5),
    lens_light_q=uniform(0.5, 1.0),
    source_amp=uniform(0.7 / 0.05**2, 0.9 / 0.05**2),
    source_r_eff=fixed(0.5),
    source_n=fixed(1.5),
    source_q=uniform(0.7, 1.0),
    source_phi=uniform(0.0, _DEG_2PI),
    source_offset=uniform(0.0, 1.2),
    cdm_count=25,
    cdm_count_poisson=False,
    cdm_mass_kind="fraction",
    cdm_fraction=fixed(0.05),
    cdm_radius=uniform(0.0, 1.0),
    vortex_profile="points",
    vortex_points=25,
    vortex_mass_kind="fraction",
    vortex_fraction=fixed(0.05),
    vortex_length=fixed(1.0),
    vortex_center=uniform(0.0, 0.5),
    psf_fwhm=fixed(0.2355),  # sigma 0.1 arcsec
    noise="counts",
    exposure_time=fixed(300.0),
    sky_level=0.1,
)

# DeepLenseSim (lenstronomy) Model I, as the public code draws it.
MODEL_I = Preset(
    name="model-i",
    description="DeepLenseSim Model I-like: 150x150 at 0.05 arcsec, SIE of a 1e12 M_sun halo "
    "(e1 0.1, shear gamma1 0.05, as the public code fixes them), 25 point masses in "
    "[1e6, 1e10] M_sun with dN/dm ~ m^-0.9, axion vortex of 3e10 M_sun.",
    n_pix=150,
    pixel_scale=0.05,
    supersample=1,
    distance_convention="deeplense-luminosity",
    lens_mass=fixed(1e12),
    lens_q=fixed(0.8181818181818182),  # e1 = 0.1, e2 = 0
    lens_phi=fixed(0.0),
    lens_center=fixed(0.0),
    shear_gamma=fixed(0.05),
    shear_angle=fixed(0.0),
    source_amp=fixed(20.0),
    source_r_eff=fixed(0.25),
    source_n=fixed(1.0),
    source_q=fixed(0.7522),  # e1 = -0.1, e2 = 0.1: |e| = 0.1414, q = (1 - |e|) / (1 + |e|)
    source_phi=fixed(1.1780972450961724),  # atan2(e2, e1) / 2 = 3 pi / 8
    source_offset_kind="box",
    source_offset=uniform(-0.35, 0.35),
    cdm_count=25,
    cdm_count_poisson=False,  # the public code draws a Poisson count, then ignores it
    cdm_mass_kind="powerlaw",
    cdm_mass_min=1e6,
    cdm_mass_max=1e10,
    cdm_slope=-0.9,  # what the code does (its docstring says -1.9)
    cdm_radius=uniform(0.25, 2.0),
    vortex_profile="line",
    vortex_mass_kind="mass",
    vortex_mass=fixed(3e10),
    vortex_length_kind="axion",
    vortex_center=fixed(0.0),
    psf_fwhm=fixed(0.087),
    noise="counts",
    exposure_time=loguniform(1000.0, 3162.2776601683795),
    background_rms=0.01,
)

# Models II (Euclid VIS) and III (HST WFC3 F160W): same physics, 64x64, noise from the
# instrument (the public code adds none for II and III: set noise=none to reproduce that).
MODEL_II = dataclasses.replace(
    MODEL_I,
    name="model-ii",
    description="DeepLenseSim Model II-like: Model I physics at 64x64 through Euclid VIS "
    "(0.101 arcsec pixels, FWHM 0.16, source magnitude 20), with noise.",
    n_pix=64,
    pixel_scale=0.101,
    supersample=2,
    source_magnitude=fixed(20.0),
    zero_point=25.72,
    psf_fwhm=fixed(0.16),
    exposure_time=fixed(566.0 * 4),
    sky_level=10 ** (-0.4 * (22.3 - 25.72)) * 0.101**2,
    background_rms=0.0,
    read_noise=4.2,
    num_exposures=4,
)

MODEL_III = dataclasses.replace(
    MODEL_II,
    name="model-iii",
    description="DeepLenseSim Model III-like: Model I physics at 64x64 through HST WFC3 F160W "
    "(0.08 arcsec pixels, FWHM 0.08, source magnitude 20), with noise.",
    pixel_scale=0.08,
    zero_point=25.96,
    psf_fwhm=fixed(0.08),
    exposure_time=fixed(5400.0),
    sky_level=10 ** (-0.4 * (22.3 - 25.96)) * 0.08**2,
    read_noise=4.0,
    num_exposures=1,
)

PHYSICAL = dataclasses.replace(
    MODEL_II,
    name="physical",
    description="Model II-like instrument with a physical CDM population: dN/dm ~ m^-1.9 on "
    "[1e7, 1e10] M_sun, Poisson mean 50, within 0.3 arcsec of the Einstein ring "
    "(substructure ~0.4% of the lens mass: hardly detectable).",
    cdm_count=50,
    cdm_count_poisson=True,
    cdm_mass_min=1e7,
    cdm_mass_max=1e10,
    cdm_slope=-1.9,
    cdm_radius=uniform(1.0, 1.6),
)

DEMO = Preset(
    name="demo",
    description="Small 64x64 set for CPU demos, in DeepLense's fixed-lens design (the smooth "
    "lens and source shape are fixed up to a rotation; the source position varies), S/N 80-120, "
    "with clearly visible substructure: Poisson(8) subhalos of 3e9-3e10 M_sun near the ring, "
    "a vortex line mass of 3-6e10 M_sun.",
    theta_e=fixed(1.2),
    lens_q=fixed(0.85),
    lens_center=fixed(0.0),
    shear_gamma=fixed(0.03),
    source_r_eff=fixed(0.25),
    source_n=fixed(1.0),
    source_q=fixed(0.8),
    source_phi=fixed(0.5),
    source_offset_kind="box",
    source_offset=uniform(-0.3, 0.3),
    cdm_mass_min=3e9,
    cdm_mass_max=3e10,
    cdm_radius=uniform(0.8, 1.6),
    vortex_mass=uniform(3e10, 6e10),
    snr=uniform(80.0, 120.0),
)

PRESETS: dict[str, Preset] = {
    p.name: p for p in (DEMO, MODEL_A, MODEL_I, MODEL_II, MODEL_III, PHYSICAL)
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, overrides: dict[str, str] | None = None) -> Preset:
    """A named preset, with optional field overrides."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return with_overrides(PRESETS[name], overrides)


def unused_fields(preset: Preset) -> set[str]:
    """Fields that a preset's other choices make irrelevant (shown as "-" in the table)."""
    out: set[str] = set()
    if preset.lens_mass is not None:
        out.add("theta_e")
    if preset.lens_light_amp.kind == "fixed" and preset.lens_light_amp.low == 0:
        out |= {"lens_light_r_eff", "lens_light_n", "lens_light_q"}
    if preset.source_magnitude is not None:
        out.add("source_amp")
    else:
        out.add("zero_point")
    if preset.cdm_mass_kind == "fraction":
        out |= {"cdm_mass_min", "cdm_mass_max", "cdm_slope"}
    else:
        out.add("cdm_fraction")
    if preset.cdm_profile == "point":
        out |= {"cdm_concentration", "cdm_truncation"}
    if preset.vortex_profile == "line":
        out.add("vortex_points")
    out.add("vortex_fraction" if preset.vortex_mass_kind == "mass" else "vortex_mass")
    out.add("vortex_length" if preset.vortex_length_kind == "axion" else "axion_mass")
    if preset.noise != "snr":
        out.add("snr")
    if preset.noise != "counts":
        out |= {"exposure_time", "sky_level", "background_rms", "read_noise", "num_exposures"}
    return out


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    if ":" in text:
        kind, lo, hi = text.split(":")
        return f"{kind} [{float(lo):.4g}, {float(hi):.4g}]"
    try:
        return f"{float(text):.4g}" if not isinstance(value, bool) else text
    except ValueError:
        return text


def presets_table() -> str:
    """Markdown table of every preset field (docs/presets.md embeds it; a test keeps it true)."""
    presets = list(PRESETS.values())
    fields = [f.name for f in dataclasses.fields(Preset) if f.name not in ("name", "description")]
    lines = [
        "| field | " + " | ".join(f"`{p.name}`" for p in presets) + " |",
        "|---|" + "---|" * len(presets),
    ]
    for name in fields:
        cells = ["-" if name in unused_fields(p) else _cell(p.to_dict()[name]) for p in presets]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
