"""Buckingham with fixed point charges (DSF Coulomb) against LAMMPS, finite differences and a fit.

LAMMPS runs the form's own commands (``buck``; with charges ``born/coul/dsf`` with σ = D = 0)
on the same rocksalt-like Mg/O structures (charges ±2 e, neutral cells) through
:func:`lammps_reference.lammps_reference`, in one process per batch. Nothing is mocked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from form_checks import check_forces_against_energy_differences, check_parameter_gradients
from lammps_reference import lammps_reference
from test_pair_models import distort, evaluate, relative_differences

from chemfit_core import Fitter
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models import build_model
from chemfit_core.models.coulomb import dsf_pair_terms
from chemfit_core.models.forms import potential_form
from chemfit_core.science.targets import StructureTarget, label

SPECIES = ["Mg", "O"]
TRUTH = {  # all pairs repulsive and dispersive (Mg–O after Lewis & Catlow, the others made up)
    "A_eV:Mg-Mg": 1000.0,
    "rho_A:Mg-Mg": 0.30,
    "C_eVA6:Mg-Mg": 2.0,
    "A_eV:Mg-O": 1428.5,
    "rho_A:Mg-O": 0.2945,
    "C_eVA6:Mg-O": 5.0,
    "A_eV:O-O": 2000.0,
    "rho_A:O-O": 0.30,
    "C_eVA6:O-O": 20.0,
}
CHARGES = {"q_e:Mg": 2.0, "q_e:O": -2.0}
CASES = {  # form options; every case with charges keeps the cells neutral
    "buck": {"cutoff_A": 7.0},
    "buck-shifted": {"cutoff_A": 7.0, "shift": True},
    "dsf-longer-coulomb": {"cutoff_A": 7.0, "charges": {"Mg": 2.0, "O": -2.0}, "coulomb_cutoff_A": 8.5},
    "dsf-shifted-shorter-coulomb": {
        "cutoff_A": 7.0,
        "shift": True,
        "charges": {"Mg": 2.0, "O": -2.0},
        "alpha_invA": 0.3,
        "coulomb_cutoff_A": 6.0,
    },
    "dsf-fitted-charges": {"cutoff_A": 8.0, "fit_charges": True, "alpha_invA": 0.25},
}


def form_of(case: str, **extra):
    return potential_form({"form": "buck", "element": "Mg", "species": SPECIES, **CASES[case], **extra})


def params_of(form) -> dict[str, float]:
    return {name: {**TRUTH, **CHARGES}[name] for name in form.parameter_names}


def rocksalt(rng: np.random.Generator, kind: str) -> Atoms:
    """A strained, rattled MgO rocksalt supercell (16-64 atoms, neutral): ``orthorhombic``,
    ``lower-triangular`` (LAMMPS's own frame) or ``general`` (sheared and rotated)."""
    reps = [(2, 1, 1), (2, 2, 1), (2, 2, 2)][rng.integers(3)]
    atoms = bulk("MgO", "rocksalt", a=4.21, cubic=True).repeat(reps)
    distort(atoms, rng, kind, rattle_A=(0.05, 0.12))
    return atoms


def crystals(n: int, seed: int) -> list[Atoms]:
    """``n`` random cells cycling through the kinds; in every fourth some atoms sit outside the cell."""
    rng = np.random.default_rng(seed)
    kinds = ("orthorhombic", "lower-triangular", "general")
    structures = [rocksalt(rng, kinds[k % 3]) for k in range(n)]
    for atoms in structures[3::4]:
        atoms.positions[::3] += np.array([2, 1, -3]) @ atoms.cell.array
        atoms.positions[1::3] -= atoms.cell.array[1]
    return structures


def mixed_structures() -> list[Atoms]:
    """A periodic crystal, a slab periodic along a and b, a rotated rod periodic along c only,
    a cluster (pbc all False) and a neutral Mg4O4 molecule with a zero cell."""
    rng = np.random.default_rng(5)
    crystal = rocksalt(rng, "general")
    slab = rocksalt(rng, "lower-triangular")
    slab.pbc = (True, True, False)
    rod = rocksalt(rng, "general")
    rod.pbc = (False, False, True)
    cluster = rocksalt(rng, "general")
    cluster.pbc = False
    molecule = bulk("MgO", "rocksalt", a=4.21, cubic=True)
    molecule.rattle(0.05, seed=3)
    molecule.set_cell(np.zeros((3, 3)))
    molecule.pbc = False
    return [crystal, slab, rod, cluster, molecule]


# -- against LAMMPS -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_energies_forces_stresses_equal_lammps(tmp_path, case):
    form = form_of(case)
    params = params_of(form)
    structures = crystals(24, seed=len(case))
    assert sum(np.abs(np.triu(s.cell.array, 1)).max() > 0.1 for s in structures) >= 8  # LAMMPS rotates these
    assert all((s.symbols == "Mg").sum() == (s.symbols == "O").sum() for s in structures)  # neutral
    commands = form.lammps_commands(params, tmp_path)
    assert commands[0].split()[1] == ("buck" if case.startswith("buck") else "born/coul/dsf")
    ref = lammps_reference(structures, commands, tmp_path, SPECIES)
    worst = relative_differences(evaluate(form.model(params), structures), ref)
    print(case, worst)
    assert max(worst.values()) <= 1e-8, worst


def test_mixed_periodicity_batch_equals_single_systems_and_lammps(tmp_path):
    form = form_of("dsf-longer-coulomb", pairs=["Mg-O", "O-O"])  # no Mg-Mg Buckingham term
    params = {k: v for k, v in TRUTH.items() if "Mg-Mg" not in k}
    model = form.model(params)
    structures = mixed_structures()
    batch = evaluate(model, structures)
    for b, s in zip(batch, structures):
        alone = evaluate(model, [s])[0]
        assert b["energy"] == pytest.approx(alone["energy"], rel=1e-13)
        np.testing.assert_allclose(b["forces"], alone["forces"], rtol=1e-12, atol=1e-12)
    for k in (1, 3):  # periodicity matters
        periodic = structures[k].copy()
        periodic.pbc = True
        assert abs(evaluate(model, [periodic])[0]["energy"] - batch[k]["energy"]) > 0.1
    worst = relative_differences(batch, lammps_reference(structures, form.lammps_commands(params), tmp_path, SPECIES))
    print("mixed-pbc", worst)
    assert max(worst.values()) <= 1e-8, worst


def test_shift_and_charges_change_lammps_as_they_change_the_model(tmp_path):
    """Guards that the comparisons are sensitive: shift and the charges move the energy a lot."""
    structures = crystals(3, seed=9)
    energies = {}
    for case in ("buck", "buck-shifted", "dsf-longer-coulomb"):
        form = form_of(case)
        params = params_of(form)
        ref = lammps_reference(structures, form.lammps_commands(params), tmp_path / case, SPECIES)
        energies[case] = (
            np.array([r["energy"] for r in ref]),
            np.array([g["energy"] for g in evaluate(form.model(params), structures)]),
        )
    for other in ("buck-shifted", "dsf-longer-coulomb"):
        lammps_gap = energies[other][0] - energies["buck"][0]
        assert np.abs(lammps_gap).min() > 0.1
        np.testing.assert_allclose(energies[other][1] - energies["buck"][1], lammps_gap, rtol=1e-9)


def test_dsf_pair_energy_and_force_vanish_at_the_cutoff_and_match_the_closed_form():
    r = torch.tensor([2.0, 5.0, 8.0 - 1e-9, 8.0], dtype=torch.float64)
    energy, dedr_over_r = dsf_pair_terms(r * r, torch.tensor(-4.0, dtype=torch.float64), 0.25, 8.0)
    assert abs(energy[2].item()) < 1e-9 and abs(dedr_over_r[2].item()) < 1e-9
    assert energy[3].item() == 0.0 and dedr_over_r[3].item() == 0.0
    x = r[:2].clone().requires_grad_(True)
    e, d = dsf_pair_terms(x * x, torch.tensor(-4.0, dtype=torch.float64), 0.25, 8.0)
    (grad,) = torch.autograd.grad(e.sum(), x)
    np.testing.assert_allclose((d * x).detach().numpy(), grad.numpy(), rtol=1e-12)


# -- finite differences -------------------------------------------------------------------------
def test_forces_are_minus_energy_gradient():
    form = form_of("dsf-shifted-shorter-coulomb")
    model = form.model(params_of(form))
    atoms = crystals(2, seed=4)[1]
    check_forces_against_energy_differences(model, atoms, [(0, 0), (3, 1), (7, 2), (10, 0)], rtol=1e-5, atol=1e-6)


def test_parameter_gradients_through_model_tensors_match_central_differences():
    form = form_of("dsf-fitted-charges")
    # A, C linear and q quadratic: central differences exact; rho: O(h²)
    check_parameter_gradients(form, params_of(form), atoms_to_state(crystals(2, seed=12)), rel_step=1e-4, rel=1e-6)


# -- parameter recovery ---------------------------------------------------------------------------
def test_known_parameters_and_charges_are_recovered_from_noise_free_data():
    form = form_of("dsf-fitted-charges", cutoff_A=6.5)
    truth = params_of(form)
    cells = [atoms for atoms in crystals(16, seed=30) if len(atoms) <= 32][:6]
    assert len(cells) == 6
    structures = label(cells, form.model(truth))
    target = StructureTarget(form, structures, stress_denominator=1e-3)
    start = {k: v * (1.06 if i % 2 else 0.95) for i, (k, v) in enumerate(truth.items())}
    fitter = Fitter(target, start, progress=False)
    fitted = fitter.fit_least_squares(jac="analytic", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    errors = {name: abs(fitted[name] / value - 1) for name, value in truth.items()}
    print("recovery: largest relative error", max(errors.values()), "evaluations", fitter.result.n_evaluations)
    assert max(errors.values()) < 1e-6, errors


def test_nearest_neighbour_is_the_cation_anion_well():
    form = form_of("dsf-longer-coulomb")
    assert 2.0 < form.nearest_neighbour_A(params_of(form)) < 2.2  # rocksalt MgO: 2.1 Å


# -- bad input ----------------------------------------------------------------------------------
def test_unknown_species_pair_is_a_clear_error():
    form = form_of("buck")
    bad = {**TRUTH, "A_eV:Mg-Si": 1.0}
    with pytest.raises(ValueError, match=r"unknown parameters \['A_eV:Mg-Si'\].*species pair"):
        form.model(bad)
    with pytest.raises(ValueError, match="unknown species pair 'Mg-Si'"):
        form_of("buck", pairs=["Mg-O", "Mg-Si"])
    with pytest.raises(ValueError, match="given twice"):
        form_of("buck", pairs=["Mg-O", "O-Mg"])
    reversed_name = {**{k: v for k, v in TRUTH.items() if k != "A_eV:Mg-O"}, "A_eV:O-Mg": 1.0}
    with pytest.raises(ValueError, match=r"unknown parameters \['A_eV:O-Mg'\].*missing parameters \['A_eV:Mg-O'\]"):
        form.model(reversed_name)


def test_missing_pair_parameters_are_a_clear_error():
    form = form_of("buck")
    with pytest.raises(ValueError, match=r"missing parameters \['C_eVA6:O-O'\]"):
        form.model({k: v for k, v in TRUTH.items() if k != "C_eVA6:O-O"})
    with pytest.raises(ValueError, match=r"missing parameters \['q_e:Mg', 'q_e:O'\]"):
        form_of("dsf-fitted-charges").model(TRUTH)
    with pytest.raises(ValueError, match="model 'buck' needs the parameter 'C'"):
        build_model({"form": "buck", "A": 1000.0, "rho": 0.3, "cutoff": 6.0, "species": ["Mg"]})
    with pytest.raises(ValueError, match="symmetric 2x2"):
        build_model({"form": "buck", "A": [[1, 2], [3, 4]], "rho": 0.3, "C": 0.0, "cutoff": 6.0, "species": SPECIES})


def test_bad_options_and_unknown_elements_are_clear_errors():
    with pytest.raises(ValueError, match="needs the option 'species'"):
        potential_form({"form": "buck", "element": "Mg", "cutoff_A": 6.0})
    with pytest.raises(ValueError, match="not both"):
        form_of("dsf-longer-coulomb", fit_charges=True)
    with pytest.raises(ValueError, match="charges must name exactly the species"):
        form_of("buck", charges={"Mg": 2.0})
    with pytest.raises(ValueError, match="rho must be positive"):
        build_model({"form": "buck", "A": 1.0, "rho": 0.0, "C": 0.0, "cutoff": 6.0, "species": ["Mg"]})
    with pytest.raises(ValueError, match="charges must name exactly"):
        build_model(
            {
                "form": "buck",
                **{"A": 1.0, "rho": 0.3, "C": 0.0},
                "cutoff": 6.0,
                "species": SPECIES,
                "charges": {"Mg": 2},
            }
        )
    model = form_of("buck").model(TRUTH)
    with pytest.raises(ValueError, match=r"no parameters for atomic numbers \[14\]"):
        model(atoms_to_state(bulk("Si", "diamond", a=5.43)))


def test_build_model_takes_charges_by_symbol_and_equals_the_form():
    form = form_of("dsf-longer-coulomb")
    params = params_of(form)
    table = lambda p: [[TRUTH[f"{p}:Mg-Mg"], TRUTH[f"{p}:Mg-O"]], [TRUTH[f"{p}:Mg-O"], TRUTH[f"{p}:O-O"]]]  # noqa: E731
    model = build_model(
        {
            "form": "buck",
            "A": table("A_eV"),
            "rho": table("rho_A"),
            "C": table("C_eVA6"),
            "cutoff": 7.0,
            "species": SPECIES,
            "charges": {"O": -2.0, "Mg": 2.0},
            "coulomb_cutoff": 8.5,
        }
    )
    structures = crystals(2, seed=3)
    for a, b in zip(evaluate(model, structures), evaluate(form.model(params), structures)):
        assert a["energy"] == b["energy"]
    assert model.lammps_commands(SPECIES) == form.lammps_commands(params)


def test_born_coul_dsf_because_this_wheels_coul_dsf_approximates_erfc(tmp_path):
    """Why the form runs as ``born/coul/dsf``: ``hybrid/overlay buck coul/dsf`` is the same
    potential, but ``coul/dsf`` here evaluates erfc with a 5-term polynomial (≈1e-7 absolute),
    far above the 1e-8 the comparisons ask for; ``born/coul/dsf`` equals the model to rounding."""
    form = form_of("dsf-longer-coulomb", coulomb_cutoff_A=7.0)
    params = params_of(form)
    structures = crystals(2, seed=40)
    born = form.lammps_commands(params)
    hybrid = ["pair_style hybrid/overlay buck 7.0 coul/dsf 0.2 7.0", "pair_coeff * * coul/dsf"]
    hybrid += [
        f"pair_coeff {line.split()[1]} {line.split()[2]} buck " + " ".join(line.split()[i] for i in (3, 4, 6))
        for line in born
        if line.startswith("pair_coeff")
    ]
    hybrid += [line for line in born if line.startswith("set ")]
    got = evaluate(form.model(params), structures)
    exact = relative_differences(got, lammps_reference(structures, born, tmp_path / "born", SPECIES))
    approximate = relative_differences(got, lammps_reference(structures, hybrid, tmp_path / "hybrid", SPECIES))
    print("born/coul/dsf", exact, "hybrid/overlay buck coul/dsf", approximate)
    assert max(exact.values()) < 1e-12
    assert max(approximate.values()) > 1e-8
