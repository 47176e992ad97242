"""Fixtures shared by the command tests."""

from __future__ import annotations

import pytest

from darklens.cli import main


@pytest.fixture(scope="session")
def simulate_vortices():
    """``darklens simulate`` of model-iii vortex lenses at 32x32 (HDF5 shards, where
    log10_axion_mass is defined): a function (out, n, seed, *more arguments) -> out."""

    def simulate(out, n, seed, *more):
        assert main(["simulate", "--preset", "model-iii", "--n-per-class", str(n), "--classes",
                     "vortex", "--out", str(out), "--seed", str(seed), "--set", "n_pix=32",
                     *more]) == 0
        return out

    return simulate
