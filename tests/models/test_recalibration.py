"""Post-hoc PIT recalibration (darklens.models.recalibration): monotone, uniformises the
validation PIT values, leaves calibrated posteriors alone, round-trips through its file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import kstest, norm

from darklens.errors import CheckpointError
from darklens.evaluate.calibration import calibration_report
from darklens.models.recalibration import (
    RECALIBRATION_JSON,
    UNIFORM_P,
    PitMap,
    Recalibration,
    beta_fit,
    load_recalibration,
    pit_values,
)

GRID = np.linspace(-9.0, 9.0, 721)[None, :]


def gaussian_lenses(n: int, scale: float, rng: np.random.Generator, draws: int = 256
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lenses with truth y ~ N(mu, 1) and reported posterior N(mu, scale^2): calibrated at
    scale 1, over-dispersed above, over-confident below. Returns draws (N, L, 1), truths
    (N, 1) and the densities (N, 1, G) on ``GRID``."""
    mu = rng.uniform(-3, 3, n)
    truth = mu + rng.normal(size=n)
    samples = mu[:, None] + scale * rng.normal(size=(n, draws))
    density = norm.pdf(GRID[0][None, :], mu[:, None], scale)[:, None, :]
    return samples[:, :, None], truth[:, None], density


@pytest.mark.parametrize(("scale", "grid", "method"),
                         [(0.5, True, "quantiles"), (2.0, True, "quantiles"),
                          (2.0, False, "quantiles"), (2.0, True, "beta"), (1.5, False, "beta"),
                          (0.8, True, "beta")])
def test_map_is_monotone_and_uniformises_validation_pit(scale: float, grid: bool,
                                                        method: str) -> None:
    """Over-confident (< 1) or over-dispersed (> 1) posteriors, their CDF from densities on a
    grid or from the draws (not for 0.5: an over-confident posterior's draws do not reach the
    truths in its tails); the empirical-CDF map, or the beta map (not for 0.5: PIT values of
    Phi(2 z) are no Beta distribution, a difference that 4000 lenses show)."""
    rng = np.random.default_rng(0)
    samples, truth, dens = gaussian_lenses(4000, scale, rng)
    grids, dens = (GRID, dens) if grid else (None, None)
    pit = pit_values(samples, truth, grids, dens)[:, 0]
    assert kstest(pit, "uniform").pvalue < 1e-6  # miscalibrated before
    rec = Recalibration.fit(["y"], samples, truth, grids, dens, method=method)
    pmap = rec.maps[0]
    assert pmap != PitMap.identity()
    p = np.linspace(0, 1, 1001)
    assert np.all(np.diff(pmap(p)) >= 0)
    assert np.all(np.diff(np.asarray(pmap.x)) > 0) and np.all(np.diff(np.asarray(pmap.y)) > 0)
    assert kstest(pmap(pit), "uniform").pvalue > 0.05  # on the lenses it was fitted on
    # on new lenses: the recalibrated draws pass SBC, the densities' PIT values are uniform
    new_samples, new_truth, new_dens = gaussian_lenses(2000, scale, np.random.default_rng(1))
    new_grids, new_dens = (GRID, new_dens) if grid else (None, None)
    moved = rec.apply_samples(new_samples, new_grids, new_dens)
    before = calibration_report(new_samples, new_truth, ["y"], None)["targets"]["y"]
    after = calibration_report(moved, new_truth, ["y"], None)["targets"]["y"]
    # (a chi-square p of 1e-3 still allows the map's sampling noise; before: far below)
    assert before["sbc"]["p_value"] < 1e-9 and after["sbc"]["p_value"] > 1e-3
    assert abs(after["coverage_by_truth"]["central_68"] - 0.68) < 0.04
    assert abs(after["tarp"]["ecp_68"] - 0.68) < 0.04
    if grid:
        recal = rec.apply_density(GRID, new_dens)
        assert kstest(pit_values(moved, new_truth, GRID, recal)[:, 0], "uniform").pvalue > 0.01


def test_calibrated_posteriors_are_left_nearly_unchanged() -> None:
    rng = np.random.default_rng(2)
    p = np.linspace(0, 1, 501)
    # the beta map: the identity unless uniformity is rejected at UNIFORM_P (false alarms at
    # that rate), and then close to it
    identity = 0
    for seed in range(20):
        s, t, _ = gaussian_lenses(1000, 1.0, np.random.default_rng(100 + seed))
        pmap = Recalibration.fit(["y"], s, t).maps[0]
        identity += pmap == PitMap.identity()
        assert (pmap == PitMap.identity()) == (beta_fit(pit_values(s, t)[:, 0])[2] > UNIFORM_P)
        assert np.max(np.abs(pmap(p) - p)) < 0.05
    assert identity >= 16
    samples, truth, _ = gaussian_lenses(4000, 1.0, rng)
    rec = Recalibration.fit(["y"], samples, truth, method="quantiles")
    assert np.max(np.abs(rec.maps[0](p) - p)) < 0.03  # sampling noise of 4000 PIT values
    moved = rec.apply_samples(samples)
    spread = samples.std(axis=1).mean()
    assert np.mean(np.abs(moved - samples)) < 0.05 * spread
    # the identity map changes nothing at all
    ident = Recalibration(("y",), (PitMap.identity(),))
    np.testing.assert_array_equal(ident.apply_samples(samples), samples)
    grid = np.linspace(-8, 8, 201)[None, :]
    dens = norm.pdf(grid[0], 0.3, 1.2)[None, None, :]
    np.testing.assert_allclose(ident.apply_density(grid, dens), dens, rtol=1e-3, atol=1e-6)


def test_density_follows_the_recalibrated_cdf() -> None:
    """An over-dispersed N(0, 2^2) posterior recalibrated by the map that turns its PIT into
    that of N(0, 1) lenses becomes (close to) N(0, 1) on the grid and in its draws."""
    z = np.linspace(1e-4, 1 - 1e-4, 400)
    pmap = PitMap(tuple([0.0, *norm.cdf(norm.ppf(z) / 2).tolist(), 1.0]),
                  tuple([0.0, *z.tolist(), 1.0]))  # R(F_2(y)) = Phi(y)
    rec = Recalibration(("y",), (pmap,))
    grid = np.linspace(-10, 10, 2001)[None, :]
    dens = norm.pdf(grid[0], 0, 2)[None, None, :]
    new = rec.apply_density(grid, dens)[0, 0]
    np.testing.assert_allclose(np.trapezoid(new, grid[0]), 1.0, rtol=1e-6)
    assert np.sqrt(np.trapezoid(new * grid[0] ** 2, grid[0])) == pytest.approx(1.0, rel=0.02)
    draws = np.random.default_rng(3).normal(0, 2, size=(1, 20000, 1))
    assert rec.apply_samples(draws).std() == pytest.approx(1.0, rel=0.03)


def test_joint_draws_keep_their_pairing() -> None:
    """Each target is moved by its marginal rank, so the draws' rank order, and with it the
    dependence between targets, is unchanged."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(5, 300))
    samples = np.stack([a, a + 0.1 * rng.normal(size=a.shape)], axis=-1)
    truth = rng.normal(size=(5, 2))
    rec = Recalibration(("a", "b"), (PitMap((0.0, 0.3, 1.0), (0.0, 0.6, 1.0)),
                                     PitMap((0.0, 0.5, 1.0), (0.0, 0.2, 1.0))))
    moved = rec.apply_samples(samples)
    for j in range(2):
        np.testing.assert_array_equal(np.argsort(moved[:, :, j], axis=1, kind="stable"),
                                      np.argsort(samples[:, :, j], axis=1, kind="stable"))
    assert rec.to_dict()["targets"]["b"]["y"] == [0.0, 0.2, 1.0]
    assert pit_values(moved, truth).shape == (5, 2)


def test_round_trip_and_bad_files(tmp_path) -> None:
    rng = np.random.default_rng(5)
    samples, truth, _ = gaussian_lenses(500, 1.5, rng)
    rec = Recalibration.fit(["y"], samples, truth, info={"n_lenses": 500})
    assert load_recalibration(tmp_path, ["y"]) is None  # a run without one
    path = rec.save(tmp_path)
    assert path.name == RECALIBRATION_JSON
    back = load_recalibration(tmp_path, ["y"])
    assert back is not None and back.maps == rec.maps and back.info == {"n_lenses": 500}
    np.testing.assert_array_equal(back.apply_samples(samples), rec.apply_samples(samples))
    with pytest.raises(CheckpointError, match="no map for z"):
        load_recalibration(tmp_path, ["y", "z"])
    obj = json.loads(path.read_text())
    obj["targets"]["y"]["y"][1] = 2.0  # not monotone
    path.write_text(json.dumps(obj))
    with pytest.raises(CheckpointError, match="bad recalibration"):
        load_recalibration(tmp_path, ["y"])
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_recalibration(tmp_path, ["y"])


def test_pit_map_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        PitMap.fit(np.array([0.2, np.nan]))
    with pytest.raises(ValueError):
        PitMap.fit(np.array([1.5]))
    with pytest.raises(ValueError):
        PitMap((0.0, 0.5, 0.5, 1.0), (0.0, 0.3, 0.6, 1.0))
    with pytest.raises(ValueError, match="unknown PIT map method"):
        PitMap.fit(np.array([0.2, 0.4]), "isotonic")
    # many ties (truths outside every draw): still a strictly increasing map
    for method in ("beta", "quantiles"):
        pmap = PitMap.fit(np.r_[np.zeros(300), np.ones(300), np.linspace(0, 1, 100)], method)
        assert pmap != PitMap.identity()
        assert np.all(np.diff(np.asarray(pmap.x)) > 0) and np.all(np.diff(pmap.y) > 0)
