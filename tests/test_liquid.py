"""Liquid targets: unit conversions, block averages, and a real short NPT run."""

from __future__ import annotations

import numpy as np
import pytest
from liquid_runs import ARGON_THETA, SHIPPED, argon_md, argon_term

from chemfit_core import ChemFitError, EvaluateContext
from chemfit_core.science.liquid import block_average, liquid_properties
from chemfit_core.units import EV_PER_ATOM_TO_KJ_PER_MOL


def test_block_average_of_white_noise_matches_the_standard_error():
    rng = np.random.default_rng(0)
    sems = []
    for _ in range(40):  # one estimate from 10 blocks scatters by ~25 %: average many
        mean, sem = block_average(rng.normal(5.0, 2.0, size=10_000), n_blocks=10)
        assert mean == pytest.approx(5.0, abs=0.1)
        sems.append(sem)
    assert np.mean(sems) == pytest.approx(2.0 / np.sqrt(10_000), rel=0.1)


def test_block_average_sees_correlation_that_naive_errors_miss():
    rng = np.random.default_rng(1)
    phi, n = 0.98, 20_000
    # standard error of the mean of an AR(1) series: sqrt(var * (1 + phi) / (1 - phi) / n)
    expected = np.sqrt(1 / (1 - phi**2) * (1 + phi) / (1 - phi) / n)
    sems, naives = [], []
    for _ in range(20):
        noise = rng.normal(size=n)
        series = np.empty(n)
        series[0] = noise[0] / np.sqrt(1 - phi**2)
        for i in range(1, n):
            series[i] = phi * series[i - 1] + noise[i]
        sems.append(block_average(series, n_blocks=10)[1])
        naives.append(series.std() / np.sqrt(n))
    assert np.mean(sems) == pytest.approx(expected, rel=0.15)
    assert np.mean(sems) > 5 * np.mean(naives)


def test_block_average_needs_enough_samples():
    with pytest.raises(ChemFitError, match="at least 5 samples"):
        block_average([1.0, 2.0], n_blocks=5)


def test_liquid_properties_convert_units():
    n = 500
    frames = 50
    thermo = {
        "Atoms": np.full(frames, n),
        "PotEng": np.full(frames, -0.06 * n),  # eV total
        "Density": np.full(frames, 1.3954),  # g/cm3
        "Volume": np.full(frames, 23770.0),  # Å3
        "Press": np.full(frames, 1.01325),  # bar
        "Temp": np.full(frames, 87.302),
    }
    props = liquid_properties(thermo, temperature_K=87.302)
    assert props.density_kg_m3 == pytest.approx(1395.4)
    # -U/N + RT - pV/N, with 1 eV/atom = 96.485 kJ/mol and R T = 0.72588 kJ/mol at 87.302 K
    expected = 0.06 * 96.4853321 + 8.314462618e-3 * 87.302 - 1.01325e5 * 23770e-30 / n * 6.02214076e23 / 1000
    assert props.hvap_kJ_mol == pytest.approx(expected, rel=1e-7)
    assert EV_PER_ATOM_TO_KJ_PER_MOL == pytest.approx(96.4853321, rel=1e-8)


def test_liquid_properties_detect_lost_atoms_and_missing_columns():
    base = {k: np.ones(10) for k in ("PotEng", "Density", "Volume", "Press", "Temp")}
    with pytest.raises(ChemFitError, match="atoms were lost"):
        liquid_properties({**base, "Atoms": np.array([10] * 9 + [9])}, 87.0)
    with pytest.raises(ChemFitError, match="lacks Atoms"):
        liquid_properties(base, 87.0)


def test_short_npt_run_gives_a_liquid_argon_density(tmp_path):
    term = argon_term(
        tmp_path,
        seed=12345,
        variables=argon_md(thermo_every=10, equilibration_steps=1000, production_steps=1000),
    )
    ctx = EvaluateContext()
    loss = term(ARGON_THETA, ctx)
    props = ctx.result.properties
    # published LJ argon: 1393.6 kg/m3 and 6.467 kJ/mol (long runs); short runs scatter more
    assert props["density_kg_m3"] == pytest.approx(1393.6, rel=0.02)
    assert props["hvap_kJ_mol"] == pytest.approx(6.467, rel=0.02)
    assert props["n_atoms"] == 256
    assert loss == pytest.approx(
        ((props["density_kg_m3"] - 1395.4) / 10) ** 2 + ((props["hvap_kJ_mol"] - 6.437) / 0.1) ** 2
    )


def test_the_shipped_template_runs_any_form_through_its_pair_lines(tmp_path):
    """Morse copper in the argon template: LAMMPS runs the form's own lines (``pair_lines``), so the
    torch model's energies of the dumped frames equal LAMMPS's (the model-gradient check, 1e-7)."""
    from chemfit_core.models.forms import potential_form
    from chemfit_core.science.liquid import LiquidStatePointTerm, Reference

    form = potential_form({"form": "morse", "element": "Cu", "cutoff_A": 6.0})
    variables = argon_md(n_cells=3, mass_g_mol=63.546, melt_temperature_K=3000.0, thermo_every=10)
    variables.update(melt_steps=200, equilibration_steps=200, production_steps=400, timestep_fs=2.0)
    term = LiquidStatePointTerm(
        name="cu",
        template=SHIPPED,
        workdir=tmp_path,
        temperature_K=1800.0,
        pressure_bar=1.0,
        references={"density_kg_m3": Reference(7900.0, 100.0)},
        seed=5,
        template_variables=variables,
        form=form,
        lammps_form=form,
        dump_every=20,
    )
    ctx = EvaluateContext()
    term({"D_eV": 0.3429, "alpha_invA": 1.3588, "r0_A": 2.866}, ctx)
    assert ctx.meta["gradient_source"] == "model" and set(ctx.result.jacobian) == {"D_eV", "alpha_invA", "r0_A"}
    assert 3000 < ctx.result.properties["density_kg_m3"] < 12000 and ctx.result.properties["n_atoms"] == 108
