"""Where-maps: every detector has one (its own or the occlusion saliency of its score); the
occlusion map finds what drives a score; the localisation rate reads the simulator's truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from darklens.evaluate.localisation import localisation, peaks, pixel_coordinates, truth_distance
from darklens.evaluate.where_maps import occlusion_map, where_map_kind, where_maps
from darklens.models.base import Detector, create_detector, list_detectors
from darklens.simulate.simulator import simulate_dataset

OWN = {"dcae", "cvae", "aae", "rbm", "residual-chi2"}
SMALL = {"dcae": {"latent_dim": 8}, "cvae": {"latent_dim": 8}, "aae": {"latent_dim": 8},
         "rbm": {"n_hidden": 16}, "residual-chi2": {"guess": "moments"}}


def _ready(name: str, images: torch.Tensor) -> Detector:
    det = create_detector(name, image_size=32, in_channels=1, **SMALL.get(name, {}))
    if name in ("knn", "deep-svdd"):
        det.fit_start([images])
    if name == "infotheoretic":
        det.fit_start([images])
        det.fit_end([images])
    return det.eval()


@pytest.mark.parametrize("name", [n for n in list_detectors() if n != "residual-chi2"])
def test_every_detector_has_a_map(name):
    images = torch.rand(6, 1, 32, 32)
    det = _ready(name, images)
    assert where_map_kind(det, images) == ("own" if name in OWN else "occlusion")
    maps = where_maps(det, images[:2])
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all()


def test_autoencoder_map_is_its_score_per_pixel():
    images = torch.rand(3, 1, 32, 32)
    det = _ready("dcae", images)
    with torch.no_grad():
        np.testing.assert_allclose(det.where_map(images).mean((1, 2)), det.score(images),
                                   rtol=1e-5)


class _Window(Detector):
    """Scores the brightness of rows 20-23, columns 8-11 only."""

    name = "window-test"

    def score(self, images):
        return images[:, 0, 20:24, 8:12].sum((1, 2))


def test_occlusion_finds_what_drives_the_score():
    images = torch.zeros(2, 1, 32, 32)
    images[:, 0, 21, 9] = 5.0  # a point the blur spreads out: the score drops when occluded
    m = occlusion_map(_Window(), images)
    assert m.shape == (2, 32, 32)
    r, c = peaks(m.numpy(), smooth=0)[0]
    assert 16 <= r <= 27 and 4 <= c <= 15
    assert float(m[0, 0:8, 24:32].abs().max()) == 0.0  # far squares change nothing


def test_truth_distance_subhalos_and_vortex_line():
    x, y = pixel_coordinates(5, 1.0)  # pixel centres at -2..2 arcsec
    meta = {"subhalo_x": np.array([[1.0, np.nan]]), "subhalo_y": np.array([[-2.0, np.nan]]),
            "vortex_x": np.array([0.0]), "vortex_y": np.array([0.0]),
            "vortex_angle": np.array([0.0]), "vortex_length": np.array([2.0])}
    d = truth_distance(meta, 0, "cdm", x, y)
    assert d[0, 3] == 0.0 and d[2, 2] == pytest.approx(np.hypot(1, 2))  # row 0: y = -2
    v = truth_distance(meta, 0, "vortex", x, y)
    assert v[2, 1] == v[2, 3] == 0.0 and v[0, 2] == 2.0 and v[2, 4] == 1.0  # beyond an end


def test_localisation_on_simulated_truth():
    data = simulate_dataset("demo", 6, seed=3, classes=("cdm", "vortex"))
    n_pix, scale = data.images.shape[-1], 0.08
    x, y = pixel_coordinates(n_pix, scale)
    kinds = [data.class_names[int(k)] for k in data.labels]
    perfect = np.stack([-truth_distance(data.metadata, i, k, x, y) for i, k in enumerate(kinds)])
    res = localisation(perfect, data.metadata, kinds, scale, smooth=0)
    assert res["cdm"]["hit_rate"] == res["vortex"]["hit_rate"] == 1.0
    assert res["all"]["n"] == 12 and 0 < res["all"]["chance"] < 0.5
    far = np.stack([truth_distance(data.metadata, i, k, x, y) for i, k in enumerate(kinds)])
    assert localisation(far, data.metadata, kinds, scale, smooth=0)["all"]["hit_rate"] == 0.0


def test_residual_chi2_map_is_the_fit_residual_and_finds_a_clump():
    from darklens.fit.instrument import from_preset
    from darklens.simulate.presets import get_preset

    preset = get_preset("demo", {"n_pix": "32", "pixel_scale": "0.16", "supersample": "1"})
    det = create_detector("residual-chi2", image_size=32, guess="moments",
                          instrument=from_preset(preset).to_dict(),
                          fit_options={"iterations": 12})
    images = simulate_dataset(preset, 2, 2, ("no_sub",)).images
    yy, xx = np.mgrid[0:32, 0:32]
    images[:, 0] += 0.5 * np.exp(-((xx - 9) ** 2 + (yy - 16) ** 2) / 2.0)  # off the lens
    maps = where_maps(det, images)
    assert maps.shape == (2, 32, 32)
    for r, c in peaks(maps, smooth=1.0):
        assert abs(r - 16) <= 2 and abs(c - 9) <= 2
