"""Potential forms and fluctuation-formula gradients: autograd against finite differences,
the estimator against an exactly solvable ensemble, and a real LAMMPS NPT run against
corresponding-states scaling of Lennard-Jones argon."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from liquid_runs import ARGON_THETA, argon_term

from chemfit_core import EvaluateContext
from chemfit_core.models.analytic_eam import AnalyticEAMForm
from chemfit_core.models.forms import potential_form
from chemfit_core.models.pair import LennardJonesForm, MorseForm
from chemfit_core.science.fluctuation import energy_derivatives, fluctuation_gradient
from chemfit_core.science.liquid import liquid_properties

FORMS = [
    (
        potential_form({"form": "lj/cut", "element": "Ar", "cutoff_sigma": 2.5, "tail_correction": True}),
        {"epsilon_K": 116.8, "sigma_A": 3.395},
        ("Ar", 5.3),
    ),
    (
        potential_form({"form": "morse", "element": "Cu", "cutoff_A": 6.0}),
        {"D_eV": 0.3429, "alpha_invA": 1.3588, "r0_A": 2.866},
        ("Cu", 3.615),
    ),
    (
        potential_form({"form": "eam/analytic", "element": "Cu", "cutoff_A": 5.5}),
        {"D_eV": 0.05, "alpha_invA": 1.5, "r0_A": 2.8, "A_eV": 1.2, "B_eV": 0.002, "beta": 5.0},
        ("Cu", 3.615),
    ),
]


def frames(symbol: str, a: float, n: int = 3) -> list:
    out = []
    for k in range(n):
        atoms = bulk(symbol, "fcc", a=a * (1 + 0.02 * k), cubic=True).repeat(2)
        atoms.rattle(0.1, seed=k)
        out.append(atoms)
    return out


def test_potential_form_registry_and_errors():
    assert isinstance(potential_form({"form": "lj/cut"}), LennardJonesForm)
    assert isinstance(potential_form({"form": "morse", "element": "Cu", "cutoff_A": 6}), MorseForm)
    assert isinstance(potential_form({"form": "eam/analytic", "element": "Cu"}), AnalyticEAMForm)
    with pytest.raises(ValueError, match="unknown potential form 'no-such-form'"):
        potential_form({"form": "no-such-form"})
    with pytest.raises(ValueError, match=r"(?s)(?=.*missing.*'sigma_A')(?=.*unknown.*'sigma'\])"):
        potential_form({"form": "lj/cut"}).model({"epsilon_K": 100.0, "sigma": 3.4})


@pytest.mark.parametrize("form,theta,crystal", FORMS, ids=[f[0].name for f in FORMS])
def test_energy_derivatives_match_finite_differences(form, theta, crystal):
    structures = frames(*crystal)
    model = form.model(theta)
    energies, grads = energy_derivatives(structures, model, form.model_tensors, theta)
    # the same model object with shifted parameters: derivatives at fixed cutoff (for
    # lj/cut the cutoff is cutoff_sigma·σ at the base point; see chemfit_core.science.fluctuation)
    for k, name in enumerate(theta):
        h = 1e-6 * abs(theta[name])
        up, _ = energy_derivatives(structures, model, form.model_tensors, {**theta, name: theta[name] + h})
        down, _ = energy_derivatives(structures, model, form.model_tensors, {**theta, name: theta[name] - h})
        np.testing.assert_allclose(grads[:, k], (up - down) / (2 * h), rtol=1e-5, atol=1e-8, err_msg=name)
    # the energies themselves are the plain model's
    from chemfit_core.engine.state import atoms_to_state

    np.testing.assert_allclose(energies, model(atoms_to_state(structures))["energy"].detach().numpy())


def test_fluctuation_formula_on_an_exactly_solvable_ensemble():
    """U = θx²/2 at inverse temperature β: ⟨x²⟩ = 1/(βθ), so d⟨x²⟩/dθ = −1/(βθ²)."""
    rng = np.random.default_rng(0)
    beta, theta = 2.0, 1.5
    x = rng.normal(0.0, np.sqrt(1 / (beta * theta)), size=2_000_000)
    grad = fluctuation_gradient(x**2, (x**2 / 2)[:, None], beta)
    assert grad[0] == pytest.approx(-1 / (beta * theta**2), rel=0.01)
    # a direct term adds its average: A = θ x² has d⟨A⟩/dθ = ⟨x²⟩ + θ d⟨x²⟩/dθ = 0
    grad = fluctuation_gradient(theta * x**2, (x**2 / 2)[:, None], beta, (x**2)[:, None])
    assert grad[0] == pytest.approx(0.0, abs=0.01 / (beta * theta))


def test_enthalpy_uses_the_set_pressure_when_given():
    rng = np.random.default_rng(3)
    thermo = {
        "Atoms": np.full(50, 100),
        "PotEng": np.full(50, -6.0),
        "Density": np.full(50, 1.4),
        "Volume": np.full(50, 4700.0),
        "Press": rng.normal(1.0, 300.0, 50),
        "Temp": np.full(50, 87.3),
    }
    steady = liquid_properties(thermo, 87.3, pressure_bar=1.0)
    noisy = liquid_properties(thermo, 87.3)
    assert steady.hvap_kJ_mol_sem == pytest.approx(0.0, abs=1e-12)
    assert noisy.hvap_kJ_mol_sem > 1e-3


@pytest.mark.slow
def test_liquid_gradients_follow_corresponding_states(tmp_path):
    """At p ≈ 0 an LJ liquid's reduced state depends only on kT/ε, so ρ ∝ σ⁻³ (d ln ρ/d ln σ = −3)
    and ΔHvap does not depend on σ (the cutoff scales with σ): one NPT run's fluctuation
    gradients must show both, within their noise."""
    term = argon_term(tmp_path, seed=7, gradients=True)
    theta = ARGON_THETA
    ctx = EvaluateContext()
    term(theta, ctx)
    gradients, props = ctx.quantities["gradients"], ctx.result.properties
    rho, h, sigma = props["density_kg_m3"], props["hvap_kJ_mol"], theta["sigma_A"]
    d_rho, d_h = gradients["density_kg_m3"]["sigma_A"], gradients["hvap_kJ_mol"]["sigma_A"]
    sem_rho, sem_h = gradients["density_kg_m3_sem"]["sigma_A"], gradients["hvap_kJ_mol_sem"]["sigma_A"]
    # within 4 block standard errors (plus 10 % for the finite pressure and g(r_c) ≠ 1)
    assert abs(d_rho - (-3 * rho / sigma)) < 4 * sem_rho + 0.1 * 3 * rho / sigma
    assert abs(d_h) < 4 * sem_h + 0.1 * h / sigma
    # ΔHvap grows with ε: d ln ΔHvap/d ln ε ≈ 1 (plus the temperature dependence)
    assert gradients["hvap_kJ_mol"]["epsilon_K"] * theta["epsilon_K"] / h > 0.5
    assert set(ctx.result.jacobian) == set(theta) and len(ctx.result.jacobian["sigma_A"]) == 2
    assert ctx.result.derivatives["density_kg_m3"] == gradients["density_kg_m3"]
    assert not any(tmp_path.rglob("frames.dump"))  # work directories are removed after parsing


@pytest.mark.slow
def test_liquid_gradients_agree_with_finite_differences_of_independent_runs(tmp_path):
    """Fluctuation gradients at θ against central differences of runs at θ ± h (same seed:
    common random numbers), within four combined standard errors."""

    def run(theta, with_gradients):
        ctx = EvaluateContext()
        argon_term(tmp_path, seed=11, gradients=with_gradients)(theta, ctx)
        return ctx

    theta = ARGON_THETA
    base = run(theta, True)
    gradients = base.quantities["gradients"]
    for name, h in (("epsilon_K", 4.0), ("sigma_A", 0.03)):
        up, down = (run({**theta, name: theta[name] + sign * h}, False).quantities for sign in (1, -1))
        for key in ("density_kg_m3", "hvap_kJ_mol"):
            fd = (up[key] - down[key]) / (2 * h)
            fd_sem = np.hypot(up[f"{key}_sem"], down[f"{key}_sem"]) / (2 * h)
            sem = np.hypot(fd_sem, gradients[f"{key}_sem"][name])
            assert abs(gradients[key][name] - fd) < 4 * sem + 0.05 * abs(fd), (name, key, gradients[key][name], fd, sem)
