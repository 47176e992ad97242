"""Physics against analytic results and against lenstronomy (an independent implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from darklens.simulate import physics
from lenstronomy_grid import lenstronomy_image_data

lenstronomy = pytest.importorskip("lenstronomy")
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402
from lenstronomy.Util import param_util  # noqa: E402

RNG = np.random.default_rng(1234)
T = torch.float64


def _t(*arrays):
    return [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in arrays]


def _points(n: int = 400, r_min: float = 0.05, r_max: float = 3.0):
    r = RNG.uniform(r_min, r_max, n)
    t = RNG.uniform(0, 2 * np.pi, n)
    return r * np.cos(t), r * np.sin(t)


# ---------------------------------------------------------------- analytic results
def test_sis_deflection_has_magnitude_theta_e_everywhere():
    x, y = _t(*_points())
    ax, ay = physics.sie_deflection(x, y, *_t(1.3, 1.0, 0.4, 0.0, 0.0))
    assert torch.allclose(torch.hypot(ax, ay), torch.full_like(x, 1.3), atol=1e-6)


def test_sis_maps_its_einstein_ring_onto_the_source_position():
    t = torch.linspace(0, 2 * math.pi, 64, dtype=T)
    x, y = 1.1 * torch.cos(t), 1.1 * torch.sin(t)
    ax, ay = physics.sie_deflection(x, y, *_t(1.1, 1.0, 0.0, 0.0, 0.0))
    assert torch.allclose(x - ax, torch.zeros_like(x), atol=1e-6)
    assert torch.allclose(y - ay, torch.zeros_like(y), atol=1e-6)


def test_point_mass_deflection_is_theta_e_squared_over_r():
    x, y = _t(*_points())
    ax, ay = physics.point_mass_deflection(x, y, *_t(0.3, 0.0, 0.0))
    r = torch.hypot(x, y)
    assert torch.allclose(torch.hypot(ax, ay), 0.09 / r, rtol=1e-10)
    assert torch.allclose(ax * y - ay * x, torch.zeros_like(x), atol=1e-12)  # radial


def test_shear_field_is_the_symmetric_tracefree_matrix():
    x, y = _t(*_points())
    g1, g2 = physics.shear_components(*_t(0.1, 0.3))
    ax, ay = physics.shear_deflection(x, y, g1, g2)
    assert torch.allclose(ax, g1 * x + g2 * y) and torch.allclose(ay, g2 * x - g1 * y)
    assert float(torch.hypot(g1, g2)) == pytest.approx(0.1)


@pytest.mark.parametrize("angle", [0.0, 0.7, 2.0])
def test_line_mass_matches_a_chain_of_many_point_masses_away_from_the_line(angle):
    theta_e, length, cx, cy = 0.4, 1.0, 0.2, -0.1
    x, y = _points(300, 0.8, 3.0)
    xx, yy = _t(x + cx, y + cy)
    lx, ly = physics.line_mass_deflection(xx, yy, *_t(theta_e, length, angle, cx, cy))
    k = 2000  # midpoint rule: each point mass carries 1/k of the mass
    s = (np.arange(k) + 0.5) / k - 0.5
    px, py = _t(cx + s * length * np.cos(angle), cy + s * length * np.sin(angle))
    te = torch.tensor(theta_e / math.sqrt(k), dtype=T)
    dx, dy = physics.point_mass_deflection(xx.unsqueeze(1), yy.unsqueeze(1), te, px, py)
    assert torch.allclose(lx, dx.sum(1), atol=1e-6)
    assert torch.allclose(ly, dy.sum(1), atol=1e-6)


def test_line_mass_far_away_looks_like_a_point_mass():
    x, y = _t([40.0, 0.0, -30.0], [0.0, 50.0, 30.0])
    lx, ly = physics.line_mass_deflection(x, y, *_t(0.5, 1.0, 0.3, 0.0, 0.0))
    px, py = physics.point_mass_deflection(x, y, *_t(0.5, 0.0, 0.0))
    assert torch.allclose(lx, px, rtol=1e-3, atol=1e-6)
    assert torch.allclose(ly, py, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------- against lenstronomy
def _lenstronomy_alpha(model: str, kwargs: dict, x, y):
    return LensModel([model]).alpha(x, y, [kwargs])


@pytest.mark.parametrize("q,phi", [(1.0, 0.0), (0.8, 0.3), (0.5, -1.2), (0.95, 2.5)])
def test_sie_matches_lenstronomy(q, phi):
    x, y = _points()
    e1, e2 = param_util.phi_q2_ellipticity(phi, q)
    kw = {"theta_E": 1.2, "e1": e1, "e2": e2, "center_x": 0.1, "center_y": -0.05}
    lx, ly = _lenstronomy_alpha("SIE", kw, x, y)
    ax, ay = physics.sie_deflection(*_t(x, y), *_t(1.2, q, phi, 0.1, -0.05))
    np.testing.assert_allclose(ax.numpy(), lx, atol=1e-5)
    np.testing.assert_allclose(ay.numpy(), ly, atol=1e-5)


def test_shear_matches_lenstronomy():
    x, y = _points()
    lx, ly = _lenstronomy_alpha("SHEAR", {"gamma1": 0.04, "gamma2": -0.07}, x, y)
    ax, ay = physics.shear_deflection(*_t(x, y), *_t(0.04, -0.07))
    np.testing.assert_allclose(ax.numpy(), lx, atol=1e-10)
    np.testing.assert_allclose(ay.numpy(), ly, atol=1e-10)


def test_point_mass_matches_lenstronomy():
    x, y = _points()
    kw = {"theta_E": 0.2, "center_x": 0.3, "center_y": 0.1}
    lx, ly = _lenstronomy_alpha("POINT_MASS", kw, x, y)
    ax, ay = physics.point_mass_deflection(*_t(x, y), *_t(0.2, 0.3, 0.1))
    np.testing.assert_allclose(ax.numpy(), lx, atol=1e-5)
    np.testing.assert_allclose(ay.numpy(), ly, atol=1e-5)


@pytest.mark.parametrize(
    "rs,alpha_rs,r_trunc", [(0.1, 0.02, 0.5), (0.3, 0.1, 0.6), (0.05, 0.01, 1.0)]
)
def test_truncated_nfw_matches_lenstronomy(rs, alpha_rs, r_trunc):
    x, y = _points(400, 0.01, 3.0)
    kw = {"Rs": rs, "alpha_Rs": alpha_rs, "r_trunc": r_trunc, "center_x": 0.0, "center_y": 0.0}
    lx, ly = _lenstronomy_alpha("TNFW", kw, x, y)
    ax, ay = physics.tnfw_deflection(*_t(x, y), *_t(rs, alpha_rs, r_trunc, 0.0, 0.0))
    np.testing.assert_allclose(ax.numpy(), lx, atol=1e-5)
    np.testing.assert_allclose(ay.numpy(), ly, atol=1e-5)


def test_noiseless_sie_sersic_image_matches_lenstronomy():
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LightModel.light_model import LightModel

    n, pix = 64, 0.08
    q, phi, sq, sphi = 0.75, 0.4, 0.7, -0.6
    e1, e2 = param_util.phi_q2_ellipticity(phi, q)
    se1, se2 = param_util.phi_q2_ellipticity(sphi, sq)
    data = lenstronomy_image_data(n, pix)
    model = ImageModel(
        data,
        PSF(psf_type="NONE"),
        lens_model_class=LensModel(["SIE", "SHEAR"]),
        source_model_class=LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics={"supersampling_factor": 1},
    )
    kw_lens = [
        {"theta_E": 1.2, "e1": e1, "e2": e2, "center_x": 0.0, "center_y": 0.0},
        {"gamma1": 0.03, "gamma2": 0.01},
    ]
    kw_src = [
        {
            "amp": 5.0,
            "R_sersic": 0.3,
            "n_sersic": 1.5,
            "e1": se1,
            "e2": se2,
            "center_x": 0.05,
            "center_y": 0.1,
        }
    ]
    ref = model.image(kw_lens, kw_src)

    x, y = physics.pixel_grid(n, pix, 1, T)
    ax, ay = physics.sie_deflection(x, y, *_t(1.2, q, phi, 0.0, 0.0))
    sx, sy = physics.shear_deflection(x, y, *_t(0.03, 0.01))
    sb = physics.sersic_profile(x - ax - sx, y - ay - sy, *_t(5.0, 0.3, 1.5, sq, sphi, 0.05, 0.1))
    ours = (sb * pix**2).view(n, n).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * ref.max())


def test_separable_psf_matches_direct_convolution_and_keeps_flux():
    img = torch.zeros(1, 33, 33, dtype=T)
    img[0, 16, 16] = 1.0
    img[0, 10, 20] = 2.0  # far enough from the edge that zero padding loses nothing
    sigma = torch.tensor([1.5], dtype=T)
    k = physics.gaussian_kernel_1d(sigma, 6, T)
    out = physics.convolve_separable(img, k, k)
    direct = physics.convolve_kernel(img, torch.outer(k[0], k[0]))
    assert torch.allclose(out, direct, atol=1e-12)
    assert float(out.sum()) == pytest.approx(3.0, rel=1e-6)


def test_sersic_total_flux_matches_a_numerical_sum():
    x, y = physics.pixel_grid(400, 0.01, 1, T)
    sb = physics.sersic_profile(x, y, *_t(2.0, 0.3, 1.2, 0.7, 0.5, 0.0, 0.0))
    numeric = float(sb.sum()) * 0.01**2
    assert numeric == pytest.approx(float(physics.sersic_total_flux(*_t(2.0, 0.3, 1.2))), rel=2e-2)


def test_float32_by_default_and_float64_on_request():
    x, y = physics.pixel_grid(8, 0.1)
    assert x.dtype == torch.float32
    x64, _ = physics.pixel_grid(8, 0.1, dtype=T)
    assert x64.dtype == torch.float64
