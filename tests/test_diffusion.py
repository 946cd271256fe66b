"""Self-diffusion from LAMMPS's ``compute msd`` (Einstein relation on the second half of the run).

Checked against independent computations: the MSD from the unwrapped coordinates LAMMPS dumps in
the same run (numpy, centre-of-mass drift removed) equals the compute's; D from many time origins of
those coordinates agrees within errors; the block standard error matches the scatter of D over
independent runs; D of synthetic Brownian motion with a known coefficient is recovered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from liquid_runs import structure_run

from chemfit_core import ChemFitError
from chemfit_core.science.structure_observables import diffusion_coefficient, read_msd
from chemfit_core.units import A2_PER_PS_TO_1E9_M2_S

MSD = {"every": 20, "file": "msd.dat"}


def unwrapped_frames(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, positions ``[frames, atoms, 3]`` sorted by id) of a ``dump ... id xu yu zu``."""
    lines = path.read_text().splitlines()
    steps, frames, k = [], [], 0
    while k < len(lines):
        n = int(lines[k + 3])
        steps.append(int(lines[k + 1]))
        rows = np.array([line.split() for line in lines[k + 9 : k + 9 + n]], dtype=float)
        frames.append(rows[np.argsort(rows[:, 0]), 1:4])
        k += 9 + n
    return np.array(steps), np.array(frames)


def without_drift(displacement: np.ndarray) -> np.ndarray:
    """Displacements ``[..., atoms, 3]`` less their mean (one species: the centre of mass's)."""
    return displacement - displacement.mean(axis=-2, keepdims=True)


def test_compute_msd_equals_numpy_on_the_dumped_unwrapped_coordinates(tmp_path):
    structure_run(tmp_path, msd=MSD)
    steps, time_ps, msd = read_msd(tmp_path / "msd.dat")
    dumped, x = unwrapped_frames(tmp_path / "unwrapped.dump")
    assert np.array_equal(steps, dumped) and len(steps) == 101
    mine = (without_drift(x - x[0]) ** 2).sum(axis=-1).mean(axis=-1)
    np.testing.assert_allclose(msd, mine, rtol=1e-8, atol=1e-8)  # the dump's 12 digits
    assert time_ps[1] - time_ps[0] == pytest.approx(20 * 0.005)  # 20 steps of 5 fs, ps
    d, d_sem = diffusion_coefficient(time_ps, msd)
    lags = np.arange(len(x) // 2)  # many time origins: every frame
    origins = [(without_drift(x[k:] - x[: len(x) - k]) ** 2).sum(axis=-1).mean() for k in lags]
    many, _ = diffusion_coefficient(lags * (time_ps[1] - time_ps[0]), np.array(origins))
    print(f"D = {d:.3f} ± {d_sem:.3f}, many origins {many:.3f} (1e-9 m²/s)")
    assert 1.0 < d < 5.0 and abs(d - many) < 3 * d_sem  # argon near 95 K: ~2.5e-9 m²/s


def test_the_block_error_of_d_is_the_scatter_over_independent_runs(tmp_path):
    """12 runs with their own seeds (108 atoms, 10 ps): the standard deviation of D between them
    against the root mean square of the standard errors each run reports."""
    values, errors = [], []
    for seed in range(1, 13):
        structure_run(tmp_path / f"s{seed}", msd=MSD, seed=seed)
        d, d_sem = diffusion_coefficient(*read_msd(tmp_path / f"s{seed}" / "msd.dat")[1:])
        values.append(d)
        errors.append(d_sem)
    ratio = np.std(values, ddof=1) / np.sqrt(np.mean(np.square(errors)))
    print(f"D = {np.mean(values):.3f}, scatter / reported error = {ratio:.2f}")
    assert 0.6 < ratio < 1.6  # 12 runs: the scatter itself is known to ~20 %


def test_d_of_brownian_motion_is_recovered_in_its_unit():
    rng = np.random.default_rng(3)
    d_a2_ps, dt, n_atoms = 0.25, 0.1, 500  # Å²/ps, ps
    steps = rng.normal(0.0, np.sqrt(2 * d_a2_ps * dt), size=(400, n_atoms, 3))
    x = np.cumsum(steps, axis=0)
    msd = (without_drift(x - x[0]) ** 2).sum(axis=-1).mean(axis=-1)
    d, d_sem = diffusion_coefficient(np.arange(400) * dt, msd)
    expected = d_a2_ps * (1 - 1 / n_atoms) * A2_PER_PS_TO_1E9_M2_S  # the drift removal takes 1/N
    assert A2_PER_PS_TO_1E9_M2_S == pytest.approx(10.0)
    assert abs(d - expected) < 3 * d_sem and d_sem < 0.1 * expected
    with pytest.raises(ChemFitError, match="too few for 5 blocks"):
        diffusion_coefficient(np.arange(12) * dt, msd[:12])
