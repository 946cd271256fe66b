"""Batched FIRE and relax_structures, checked against ASE's FIRE on the same structures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111
from ase.calculators.lj import LennardJones as AseLJ
from ase.filters import UnitCellFilter
from ase.io import read, write
from ase.optimize import FIRE

from chemfit_core.engine.fire import FireState, fire_init, fire_step, max_force
from chemfit_core.engine.relax import relax_structures
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models import LennardJones

EPS, SIG, RC = 0.0104, 3.40, 8.5


def shifted_lj():
    """Our LJ with the energy shift ASE's LennardJones(smooth=False) applies: same energies and forces."""
    return LennardJones(EPS, SIG, RC, shift=True)


def ase_relax(atoms, fmax=0.01, cell=False):
    atoms = atoms.copy()
    atoms.calc = AseLJ(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)
    target = UnitCellFilter(atoms) if cell else atoms
    opt = FIRE(target, logfile=None)
    opt.run(fmax=fmax, steps=5000)
    return atoms, opt.nsteps


def workload():
    """Perturbed fcc argon of 32-108 atoms, one triclinic cell, one slab (periodic in x, y only)."""
    structures = []
    for k, repeat in enumerate([(2, 2, 2), (2, 2, 3), (3, 3, 3), (2, 3, 3)]):
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
        atoms.rattle(0.06, seed=k)
        structures.append(atoms)
    tri = bulk("Ar", "fcc", a=5.26).repeat((3, 3, 3))  # primitive, triclinic cell
    tri.rattle(0.05, seed=11)
    slab = fcc111("Ar", size=(3, 3, 4), a=5.26, vacuum=6.0)
    slab.rattle(0.05, seed=12)
    return structures + [tri, slab]


def test_relaxed_energies_and_steps_agree_with_ase_fire():
    structures = workload()
    result = relax_structures(structures, shifted_lj(), fmax=0.01, progress_every_s=None, engine="torch")
    assert result.converged.all()
    for k, atoms in enumerate(structures):
        reference, ase_steps = ase_relax(atoms)
        per_atom = abs(result.energies[k] - reference.get_potential_energy()) / len(atoms)
        assert per_atom <= 1e-4, f"structure {k}: {per_atom:.2e} eV/atom"
        assert abs(int(result.n_steps[k]) - ase_steps) <= 2, f"structure {k}: {result.n_steps[k]} vs {ase_steps}"
        assert np.abs(result.structures[k].get_forces()).max() <= 0.01 * 1.0001


def test_results_come_back_in_input_order_with_forces_and_flags():
    structures = workload()
    for k, atoms in enumerate(structures):
        atoms.info["tag"] = f"s{k}"
    result = relax_structures(
        structures,
        shifted_lj(),
        max_memory_scaler=120,
        memory_scales_with="n_atoms",
        progress_every_s=None,
        engine="torch",
    )
    assert [a.info["tag"] for a in result.structures] == [f"s{k}" for k in range(len(structures))]
    assert [len(a) for a in result.structures] == [len(a) for a in structures]
    for atoms in result.structures:
        assert atoms.info["relax_converged"] and atoms.info["relax_fmax"] <= 0.01
        assert atoms.get_forces().shape == (len(atoms), 3)


def test_a_late_entrant_takes_the_same_steps_as_alone():
    small = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    small.rattle(0.07, seed=3)
    alone = relax_structures([small], shifted_lj(), progress_every_s=None, engine="torch")
    big = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((3, 3, 3))
    big.rattle(0.07, seed=4)
    # the budget admits the big structure first; the small one joins mid-run
    late = relax_structures(
        [big, big.copy(), small],
        shifted_lj(),
        max_memory_scaler=216 + 32,
        memory_scales_with="n_atoms",
        progress_every_s=None,
        engine="torch",
    )
    assert late.n_steps[2] == alone.n_steps[0]
    assert late.energies[2] == pytest.approx(alone.energies[0], abs=1e-9)


def test_max_steps_caps_each_structure_and_flags_it():
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=5)
    result = relax_structures([atoms, atoms.copy()], shifted_lj(), max_steps=4, progress_every_s=None, engine="torch")
    assert list(result.n_steps) == [4, 4]
    assert not result.converged.any() and (result.fmax > 0.01).all()


def test_cell_relaxation_finds_the_pressure_free_lattice_constant():
    atoms = bulk("Ar", "fcc", a=5.6, cubic=True).repeat((2, 2, 2))  # strained by +6 %
    result = relax_structures([atoms], shifted_lj(), relax_cell=True, fmax=1e-4, progress_every_s=None, engine="torch")
    reference, _ = ase_relax(atoms, fmax=1e-4, cell=True)
    ours = result.structures[0]
    assert result.converged[0]
    assert np.abs(ours.get_stress()).max() < 1e-5  # eV/Å3
    a_ours = ours.cell.lengths()[0] / 2
    a_ase = reference.cell.lengths()[0] / 2
    assert a_ours == pytest.approx(a_ase, rel=1e-5)
    assert result.energies[0] / 32 == pytest.approx(reference.get_potential_energy() / 32, abs=1e-6)


def test_a_cell_factor_relaxes_as_ases_unit_cell_filter_with_it_and_bounds_the_stress():
    atoms = bulk("Ar", "fcc", a=5.32, cubic=True).repeat((3, 3, 3))  # strained by +1 %
    atoms.rattle(0.02, seed=3)
    factor = float(np.sqrt(len(atoms)) * np.cbrt(atoms.get_volume() / len(atoms)))  # √N · (V/N)^(1/3), Å
    fmax = 1e-3
    result = relax_structures(
        [atoms], shifted_lj(), relax_cell=True, cell_factor=factor, fmax=fmax, progress_every_s=None, engine="torch"
    )
    reference = atoms.copy()
    reference.calc = AseLJ(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)
    opt = FIRE(UnitCellFilter(reference, cell_factor=factor), logfile=None)
    opt.run(fmax=fmax, steps=5000)
    ours = result.structures[0]
    assert result.converged[0] and int(result.n_steps[0]) == opt.nsteps
    np.testing.assert_allclose(ours.cell.array, reference.cell.array, atol=1e-6)
    assert result.energies[0] == pytest.approx(reference.get_potential_energy(), abs=1e-8)
    # the cell rows' forces are V·σ/cell_factor: held to fmax, the stress is within fmax·cell_factor/V
    assert np.abs(ours.get_stress()).max() <= fmax * factor / ours.get_volume()


def test_cell_factor_is_checked():
    atoms = bulk("Ar", "fcc", a=5.3, cubic=True)
    with pytest.raises(ValueError, match="cell_factor must be a finite number > 0"):
        relax_structures([atoms], shifted_lj(), relax_cell=True, cell_factor=0.0, engine="torch")
    for engine in ("torch", "auto"):  # auto would hand fixed cells to LAMMPS: the option must not vanish there
        with pytest.raises(ValueError, match="needs relax_cell=True"):
            relax_structures([atoms], shifted_lj(), cell_factor=10.0, engine=engine, device="cpu")


def test_mixed_pbc_batch_gives_each_system_its_own_energy():
    structures = workload()[-2:] + workload()[:1]  # triclinic crystal, slab, cube
    together = relax_structures(structures, shifted_lj(), progress_every_s=None, engine="torch")
    for k, atoms in enumerate(structures):
        alone = relax_structures([atoms], shifted_lj(), progress_every_s=None, engine="torch")
        assert together.energies[k] == pytest.approx(alone.energies[0], abs=1e-8)


def test_float32_relaxation_reaches_the_same_minima():
    structures = workload()[:3]
    r64 = relax_structures(structures, shifted_lj(), progress_every_s=None, engine="torch")
    r32 = relax_structures(structures, shifted_lj(), dtype=torch.float32, progress_every_s=None, engine="torch")
    assert r32.converged.all()
    per_atom = np.abs(r64.energies - r32.energies) / np.array([len(a) for a in structures])
    assert per_atom.max() < 1e-5


def test_fire_functions_work_step_by_step():
    state = fire_init(atoms_to_state(workload()[:2]), shifted_lj())
    assert isinstance(state, FireState) and state.fresh.all() and state.evaluated.all()
    before = max_force(state)
    for _ in range(30):
        fire_step(state, shifted_lj())
    assert (max_force(state) < before).all() and (state.n_steps == 30).all()


def test_neighbour_lists_are_reused_between_steps():
    model = shifted_lj()
    relax_structures(workload()[:4], model, progress_every_s=None, engine="torch")
    assert model.neighbor_list.builds <= 2 * 4  # one build per structure, a rebuild at most


@pytest.mark.parametrize("model", [shifted_lj(), LennardJones(EPS, SIG, RC)], ids=["shifted", "unshifted"])
def test_lammps_workers_reach_the_same_minima_as_the_torch_engine(model):
    structures = workload()
    torch_result = relax_structures(structures, model, progress_every_s=None, engine="torch")
    lammps_result = relax_structures(structures, model, progress_every_s=None, engine="lammps", workers=2)
    assert lammps_result.engine == "lammps" and lammps_result.converged.all()
    per_atom = np.abs(torch_result.energies - lammps_result.energies) / np.array([len(a) for a in structures])
    assert per_atom.max() <= 1e-4
    for relaxed, original in zip(lammps_result.structures, structures):
        assert len(relaxed) == len(original) and np.linalg.norm(relaxed.get_forces(), axis=1).max() <= 0.01
        assert np.allclose(relaxed.cell.array, original.cell.array)


def test_auto_engine_uses_lammps_on_cpu_and_torch_for_cell_relaxation():
    structures = workload()[:2]
    assert relax_structures(structures, shifted_lj(), progress_every_s=None, device="cpu").engine == "lammps"
    cell = relax_structures(structures, shifted_lj(), progress_every_s=None, device="cpu", relax_cell=True)
    assert (cell.engine, cell.device) == ("torch", "cpu")


def test_cli_relaxes_an_extxyz_file(tmp_path):
    structures = workload()[:3]
    for k, atoms in enumerate(structures):
        atoms.info["name"] = f"cell{k}"
    write(tmp_path / "in.extxyz", structures, format="extxyz")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chemfit_core",
            "relax",
            str(tmp_path / "in.extxyz"),
            str(tmp_path / "out.extxyz"),
            "--model",
            "lj/cut",
            "--param",
            f"epsilon={EPS}",
            "--param",
            f"sigma={SIG}",
            "--cutoff",
            str(RC),
            "--fmax",
            "0.01",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    relaxed = read(tmp_path / "out.extxyz", ":")
    assert [a.info["name"] for a in relaxed] == ["cell0", "cell1", "cell2"]
    assert all(a.info["relax_converged"] for a in relaxed)
    assert np.abs(relaxed[0].get_forces()).max() <= 0.01 * 1.0001
    assert relaxed[0].get_potential_energy() / len(relaxed[0]) == pytest.approx(-0.0842, abs=2e-3)


def test_cli_reports_bad_model_arguments(tmp_path):
    write(tmp_path / "in.extxyz", workload()[:1], format="extxyz")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chemfit_core",
            "relax",
            str(tmp_path / "in.extxyz"),
            str(tmp_path / "o.extxyz"),
            "--model",
            "lj/cut",
            "--param",
            "epsilon=0.01",
            "--cutoff",
            "8.5",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "model 'lj/cut' needs the parameter 'sigma'" in done.stderr


def test_fire_takes_torch_sims_cell_filter_and_step_keywords():
    from chemfit_core.engine import CellFilter

    strained = bulk("Ar", "fcc", a=5.6, cubic=True).repeat((2, 2, 2))
    ours = fire_init(atoms_to_state([strained]), shifted_lj(), relax_cell=True)
    theirs = fire_init(atoms_to_state([strained]), shifted_lj(), cell_filter=CellFilter.unit, scalar_pressure=0.0)
    for _ in range(20):
        fire_step(ours, shifted_lj())
        fire_step(state=theirs, model=shifted_lj(), max_step=0.2, dt_max=1.0)
    assert theirs.relax_cell and torch.equal(ours.cell, theirs.cell) and torch.equal(ours.positions, theirs.positions)
    slow = fire_init(atoms_to_state([strained]), shifted_lj(), cell_filter="unit", dt_start=0.01)
    fire_step(slow, shifted_lj())
    assert float(slow.dt[0]) == pytest.approx(0.01) and not torch.equal(slow.cell, ours.cell)
    with pytest.raises(ValueError, match="ase_fire"):
        fire_step(slow, shifted_lj(), fire_flavor="vv_fire")


def test_threads_option_sets_torch_threads_for_the_run_only():
    structures = workload()[:2]
    before = torch.get_num_threads()
    one = relax_structures(structures, shifted_lj(), engine="torch", threads=1, progress_every_s=None)
    assert torch.get_num_threads() == before
    default = relax_structures(structures, shifted_lj(), engine="torch", progress_every_s=None)
    np.testing.assert_allclose(one.energies, default.energies, rtol=1e-12)
    assert one.n_steps.tolist() == default.n_steps.tolist()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        relax_structures(structures, shifted_lj(), engine="torch", threads=0)


def test_cli_relaxes_cells_with_a_cell_factor_and_checks_it(tmp_path):
    atoms = bulk("Ar", "fcc", a=5.32, cubic=True).repeat((3, 3, 3))
    write(tmp_path / "in.extxyz", [atoms], format="extxyz")
    command = [sys.executable, "-m", "chemfit_core", "relax", str(tmp_path / "in.extxyz"), str(tmp_path / "o.extxyz")]
    command += ["--model", "lj/cut", "--param", f"epsilon={EPS}", "--param", f"sigma={SIG}", "--cutoff", str(RC)]
    command += ["--device", "cpu", "--fmax", "1e-3"]
    unchecked = subprocess.run([*command, "--cell-factor", "20"], capture_output=True, text=True)
    assert unchecked.returncode == 1 and "--cell-factor needs --relax-cell" in unchecked.stderr
    done = subprocess.run([*command, "--relax-cell", "--cell-factor", "20"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    relaxed = read(tmp_path / "o.extxyz")
    assert relaxed.info["relax_converged"]
    assert np.abs(relaxed.get_stress()).max() <= 1e-3 * 20 / relaxed.get_volume()


def test_per_system_helpers_agree_for_one_system_and_many():
    from chemfit_core.engine.cell_filter import per_atom, per_system_abs_max

    structures = workload()[:3]
    state = atoms_to_state(structures)
    values = torch.randn(state.n_atoms, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    per_system = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.equal(per_atom(per_system, state), per_system[state.system_idx].unsqueeze(1))
    expected = [values[state.system_idx == s].abs().max() for s in range(3)]
    assert torch.equal(per_system_abs_max(values, state), torch.stack(expected))
    one = atoms_to_state(structures[:1])
    first = values[: one.n_atoms]
    assert torch.equal(per_system_abs_max(first, one), first.abs().max().view(1))
    assert torch.equal((per_atom(per_system[:1], one) * first), per_system[0] * first)
