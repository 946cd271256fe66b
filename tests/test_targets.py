"""In-process targets: exact Jacobians, parameter recovery from synthetic data, and
copper Morse fitted to experiment (Girifalco–Weizer recovered)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from chemfit_core import ChemFitError, CombinedObjectiveFunction, EvaluateContext, Fitter
from chemfit_core.models.forms import potential_form
from chemfit_core.science.crystal import CrystalSetup
from chemfit_core.science.liquid import Reference
from chemfit_core.science.targets import CrystalTarget, StructureTarget, label

MORSE_GW = {"D_eV": 0.3429, "alpha_invA": 1.3588, "r0_A": 2.866}
EAM_TRUE = {"D_eV": 0.05, "alpha_invA": 1.5, "r0_A": 2.8, "A_eV": 1.2, "B_eV": 0.002, "beta": 5.0}


def synthetic(form, params, n: int = 8, seed: int = 0) -> list:
    """Rattled, strained copper cells labelled with the model's own energies, forces and stresses."""
    rng = np.random.default_rng(seed)
    cells = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.615 * (1 + 0.03 * rng.uniform(-1, 1)), cubic=True).repeat((2, 2, 1 + k % 2))
        atoms.rattle(0.1, seed=k)
        cells.append(atoms)
    return label(cells, form.model(params))


def test_structure_target_jacobian_equals_finite_differences():
    form = potential_form({"form": "eam/analytic", "element": "Cu", "cutoff_A": 5.5})
    target = StructureTarget(form, synthetic(form, EAM_TRUE, n=3), stress_denominator=1e-3)
    theta = {k: v * 1.05 for k, v in EAM_TRUE.items()}
    ctx = EvaluateContext()
    target(theta, ctx)
    r0 = np.array(ctx.result.residuals)
    for name in theta:
        h = 1e-6 * abs(theta[name])
        c_up, c_down = EvaluateContext(), EvaluateContext()
        target({**theta, name: theta[name] + h}, c_up)
        target({**theta, name: theta[name] - h}, c_down)
        fd = (np.array(c_up.result.residuals) - np.array(c_down.result.residuals)) / (2 * h)
        np.testing.assert_allclose(ctx.result.jacobian[name], fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max(), err_msg=name)
    assert len(r0) == 3 + 3 * sum(len(a) for a in target.structures) + 3 * 6


@pytest.mark.parametrize(
    "spec,truth",
    [
        ({"form": "morse", "element": "Cu", "cutoff_A": 7.0}, MORSE_GW),
        ({"form": "eam/analytic", "element": "Cu", "cutoff_A": 5.5}, EAM_TRUE),
    ],
    ids=["morse", "eam-analytic"],
)
def test_known_parameters_are_recovered_from_noise_free_data(spec, truth):
    form = potential_form(spec)
    target = StructureTarget(form, synthetic(form, truth), stress_denominator=1e-3)
    start = {k: v * (1.08 if i % 2 else 0.93) for i, (k, v) in enumerate(truth.items())}
    fitter = Fitter(target, start, progress=False)
    params = fitter.fit_least_squares(jac="analytic", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    for name, value in truth.items():
        assert params[name] == pytest.approx(value, rel=1e-6), name
    assert fitter.result.n_evaluations < 60


def test_structure_target_needs_labelled_structures():
    form = potential_form({"form": "morse", "element": "Cu", "cutoff_A": 7.0})
    with pytest.raises(ValueError, match="need energies and forces"):
        StructureTarget(form, [bulk("Cu", "fcc", a=3.6)])
    with pytest.raises(ValueError, match="unknown crystal properties"):
        CrystalTarget(form, CrystalSetup("Cu"), {"a0": Reference(3.615, 0.01)})


def test_a_collapsing_lattice_stops_with_the_reason():
    form = potential_form({"form": "morse", "element": "Cu", "cutoff_A": 7.0})
    target = CrystalTarget(
        form, CrystalSetup("Cu", a_guess_A=3.6), {"a0_A": Reference(3.615, 0.01)}, validate=["vacancy_eV"]
    )
    with pytest.raises(ChemFitError, match="collapsed"):
        target({"D_eV": 0.3429, "alpha_invA": 1.3588, "r0_A": 1.0})


@pytest.mark.slow
def test_copper_morse_fitted_to_experiment_recovers_girifalco_weizer():
    """a0, Ec and B of copper (FACTS.md) fix the three Morse parameters; Girifalco and Weizer
    (1959) fitted the same data, so their parameters come back; C44 and the vacancy
    energy, not fitted, show the form's limits."""
    form = potential_form({"form": "morse", "element": "Cu", "cutoff_A": 12.0})
    refs = {"a0_A": Reference(3.615, 0.003615), "Ec_eV": Reference(3.54, 0.0354), "B_GPa": Reference(138.3, 1.383)}
    target = CrystalTarget(form, CrystalSetup("Cu", a_guess_A=3.6, fmax=1e-6), refs, validate=["C44_GPa", "vacancy_eV"])
    start = {"D_eV": 0.32, "alpha_invA": 1.30, "r0_A": 2.90}
    fitter = Fitter(
        CombinedObjectiveFunction([target]),
        start,
        bounds={"D_eV": (0.2, 0.5), "alpha_invA": (1.0, 1.8), "r0_A": (2.6, 3.1)},
        progress=False,
    )
    params = fitter.fit_least_squares(jac="2-point", diff_step=1e-5)
    ctx = EvaluateContext()
    target(params, ctx)
    props = ctx.result.properties
    for name, ref in refs.items():
        assert props[name] == pytest.approx(ref.value, rel=0.005), name
    for name, value in MORSE_GW.items():
        assert params[name] == pytest.approx(value, rel=0.03), name
    assert props["C44_GPa"] / 75.8 - 1 > 0.4  # Morse forces C12 = C44: ~+60 %
    assert props["vacancy_eV"] / 1.27 - 1 > 1.0  # ~+150 %
    errors = fitter.result.standard_errors()
    assert set(errors) == set(start) and all(e > 0 for e in errors.values())


def test_structures_from_an_extxyz_file_keep_their_labels(tmp_path):
    from ase.io import write

    from chemfit_core.stages.objective import targets_from_config

    form = potential_form({"form": "morse", "element": "Cu", "cutoff_A": 7.0})
    write(tmp_path / "ref.extxyz", synthetic(form, MORSE_GW, n=3))
    fit = {
        "element": "Cu",
        "potential": {"form": "morse", "cutoff_A": 7.0},
        "structures": {
            "file": str(tmp_path / "ref.extxyz"),
            "energy_denominator": 1e-3,
            "force_denominator": 0.05,
            "stress_denominator": 1e-3,
            "weight": 2.0,
        },
    }
    [(name, term, weight)] = targets_from_config(fit)
    assert (name, weight, len(term.structures)) == ("structures", 2.0, 3)
    assert term(MORSE_GW) == pytest.approx(0.0, abs=1e-8)  # extxyz keeps ~8 significant digits
    assert term({**MORSE_GW, "r0_A": 2.9}) > 1.0
