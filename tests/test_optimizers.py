"""Batched BFGS and L-BFGS (and the cell filter they share with FIRE), checked against ASE's optimisers.

ASE's algorithms per system: BFGS with the initial Hessian 70 eV/Å² and maxstep 0.2 Å,
L-BFGS with memory 100, damping 1, alpha 70 and maxstep 0.2 Å; the same structures
take the same path (positions after every step to 1e-8 Å), the same number of steps
and reach the same energies.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111
from ase.calculators.lj import LennardJones as AseLJ
from ase.filters import UnitCellFilter
from ase.optimize import BFGS, LBFGS

from chemfit_core.engine import (
    BFGSState,
    CellFilter,
    LBFGSState,
    bfgs_init,
    bfgs_step,
    lbfgs_init,
    lbfgs_step,
)
from chemfit_core.engine.cell_filter import max_force
from chemfit_core.engine.lbfgs import resize_history
from chemfit_core.engine.relax import relax_structures
from chemfit_core.engine.state import atoms_to_state, concatenate_states
from chemfit_core.models import LennardJones

EPS, SIG, RC = 0.0104, 3.40, 8.5
FMAX = 1e-3
OURS = {"bfgs": (bfgs_init, bfgs_step), "lbfgs": (lbfgs_init, lbfgs_step)}
ASE = {"bfgs": BFGS, "lbfgs": LBFGS}


def lj():
    """Our LJ with the shift of ASE's LennardJones(smooth=False): the same energies and forces."""
    return LennardJones(EPS, SIG, RC, shift=True)


def structures():
    """Perturbed fcc argon (32, 48, 108 atoms), a triclinic cell and a slab (periodic in x, y)."""
    out = []
    for k, repeat in enumerate([(2, 2, 2), (2, 2, 3), (3, 3, 3)]):
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(repeat)
        atoms.rattle(0.06, seed=k)
        out.append(atoms)
    tri = bulk("Ar", "fcc", a=5.26).repeat((3, 3, 3))
    tri.rattle(0.05, seed=11)
    slab = fcc111("Ar", size=(3, 3, 4), a=5.26, vacuum=6.0)
    slab.rattle(0.05, seed=12)
    return out + [tri, slab]


def strained():
    """Cells 4-6 % too large, one of them perturbed: for the cell filter."""
    a = bulk("Ar", "fcc", a=5.6, cubic=True).repeat((2, 2, 2))
    b = bulk("Ar", "fcc", a=5.26 * 1.04, cubic=True).repeat((2, 2, 2))
    b.rattle(0.05, seed=1)
    return [a, b]


def ase_path(atoms, name, cell=False, **options):
    """Positions and cells after every step of ASE's optimiser, its step count and final energy."""
    atoms = atoms.copy()
    atoms.calc = AseLJ(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)
    opt = ASE[name](UnitCellFilter(atoms) if cell else atoms, logfile=None, **options)
    path = [(atoms.positions.copy(), atoms.cell.array.copy()) for _ in opt.irun(fmax=FMAX, steps=500)]
    return path, opt.nsteps, atoms.get_potential_energy()


@functools.cache
def reference(name, k):
    """ASE's run on ``structures()[k]`` (shared by the tests: ASE's BFGS is the slow part)."""
    return ase_path(structures()[k], name)


def our_paths(batch, name, cell=False, **options):
    """Every system's positions and cells after each of its steps, run as one batch until all converge."""
    init, step = OURS[name]
    state = init(atoms_to_state(batch), lj(), cell_filter=CellFilter.unit if cell else None, **options)
    paths = [[(a.positions, a.cell.array)] for a in state.to_atoms()]
    done = state.converged(FMAX).clone()
    for _ in range(500):
        if bool(done.all()):
            break
        step(state, lj(), active=~done)
        for k, atoms in enumerate(state.to_atoms()):
            if not done[k]:
                paths[k].append((atoms.positions, atoms.cell.array))
        done |= state.converged(FMAX)
    return state, paths


def assert_same_path(ours, theirs, label):
    assert len(ours) == len(theirs), f"{label}: {len(ours) - 1} steps here, {len(theirs) - 1} in ASE"
    for k, ((pos, cell), (ase_pos, ase_cell)) in enumerate(zip(ours, theirs)):
        assert np.abs(pos - ase_pos).max() <= 1e-8, f"{label}: positions differ after step {k}"
        assert np.abs(cell - ase_cell).max() <= 1e-8, f"{label}: cells differ after step {k}"


@pytest.mark.parametrize("name", ["bfgs", "lbfgs"])
def test_each_system_follows_ases_path_inside_a_mixed_batch(name):
    batch = structures()
    state, paths = our_paths(batch, name)
    for k, atoms in enumerate(batch):
        path, n_ase, energy = reference(name, k)
        assert_same_path(paths[k], path, f"{name} structure {k}")
        assert int(state.n_steps[k]) == n_ase
        assert abs(float(state.energy[k]) - energy) / len(atoms) <= 1e-6


@pytest.mark.parametrize("name", ["bfgs", "lbfgs"])
def test_cell_filter_follows_ases_unit_cell_filter(name):
    batch = strained()
    state, paths = our_paths(batch, name, cell=True)
    assert float(max_force(state).max()) <= FMAX
    for k, atoms in enumerate(batch):
        path, n_ase, energy = ase_path(atoms, name, cell=True)
        assert_same_path(paths[k], path, f"{name} cell {k}")
        assert abs(float(state.energy[k]) - energy) / len(atoms) <= 1e-6


def test_a_short_lbfgs_memory_drops_the_oldest_pairs_as_ase_does():
    batch = structures()[:2]
    _, paths = our_paths(batch, "lbfgs", max_history=5)
    for k, atoms in enumerate(batch):
        path, n_ase, _ = ase_path(atoms, "lbfgs", memory=5)
        assert n_ase > 5  # the history did wrap
        assert_same_path(paths[k], path, f"lbfgs memory 5, structure {k}")


@pytest.mark.parametrize("name", ["bfgs", "lbfgs"])
def test_relax_structures_with_bfgs_and_lbfgs_reaches_ases_minima(name):
    batch = structures()
    result = relax_structures(batch, lj(), fmax=FMAX, optimizer=name, progress_every_s=None, device="cpu")
    assert result.engine == "torch" and result.converged.all()
    for k, atoms in enumerate(batch):
        _, n_ase, energy = reference(name, k)
        assert abs(result.energies[k] - energy) / len(atoms) <= 1e-6
        assert abs(int(result.n_steps[k]) - n_ase) <= 1
        assert result.structures[k].info["relax_converged"]


@pytest.mark.parametrize("name", ["bfgs", "lbfgs"])
def test_a_late_entrant_takes_the_same_steps_as_alone(name):
    small = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    small.rattle(0.07, seed=3)
    big = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((3, 3, 3))
    big.rattle(0.07, seed=4)
    common = {"optimizer": name, "progress_every_s": None, "engine": "torch", "memory_scales_with": "n_atoms"}
    alone = relax_structures([small], lj(), **common)
    late = relax_structures([big, big.copy(), small], lj(), max_memory_scaler=216 + 32, **common)
    assert late.n_steps[2] == alone.n_steps[0]
    assert late.energies[2] == pytest.approx(alone.energies[0], abs=1e-9)


def test_cell_relaxation_with_bfgs_matches_fire():
    atoms = strained()[:1]
    common = {"relax_cell": True, "fmax": 1e-4, "progress_every_s": None, "engine": "torch"}
    fire = relax_structures(atoms, lj(), **common)
    for name in ("bfgs", "lbfgs"):
        result = relax_structures(atoms, lj(), optimizer=name, **common)
        assert result.converged[0] and np.abs(result.structures[0].get_stress()).max() < 1e-5
        assert result.energies[0] / 32 == pytest.approx(fire.energies[0] / 32, abs=1e-8)


def test_optimizer_options_reach_the_states():
    atoms = structures()[:1]
    common = {"progress_every_s": None, "engine": "torch", "fmax": FMAX}
    gentle = relax_structures(atoms, lj(), optimizer="bfgs", optimizer_options={"max_step": 0.01}, **common)
    default = relax_structures(atoms, lj(), optimizer="bfgs", **common)
    assert gentle.converged[0] and gentle.n_steps[0] > default.n_steps[0]
    with pytest.raises(ValueError, match="takes the options"):
        relax_structures(atoms, lj(), optimizer="bfgs", optimizer_options={"memory": 3}, **common)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        relax_structures(atoms, lj(), optimizer="newton", **common)


def test_engine_choice_with_quasi_newton_optimizers():
    atoms = structures()[:1]
    auto = relax_structures(atoms, lj(), optimizer="lbfgs", progress_every_s=None, device="cpu")
    assert auto.engine == "torch"  # LAMMPS workers run FIRE only
    with pytest.raises(ValueError, match="LAMMPS engine needs FIRE"):
        relax_structures(atoms, lj(), optimizer="bfgs", progress_every_s=None, engine="lammps")


@pytest.mark.parametrize("name", ["bfgs", "lbfgs"])
def test_max_steps_caps_each_structure(name):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=5)
    result = relax_structures([atoms, atoms.copy()], lj(), optimizer=name, max_steps=4, progress_every_s=None)
    assert list(result.n_steps) == [4, 4] and not result.converged.any()


def test_bfgs_states_split_join_and_copy_with_their_hessians():
    state = bfgs_init(atoms_to_state(structures()[:2]), lj())
    for _ in range(3):
        bfgs_step(state, lj())
    assert all(h is not None for h in state.hessian)
    assert [h.shape[0] for h in state.hessian] == [3 * 32, 3 * 48]
    parts = state.split()
    joined = concatenate_states(parts[::-1])
    assert isinstance(joined, BFGSState) and joined.hessian[0] is parts[1].hessian[0]
    copy = state.clone()
    assert copy.hessian[1] is not state.hessian[1] and torch.equal(copy.hessian[1], state.hessian[1])
    # stepping the copy leaves the original's path alone
    bfgs_step(copy, lj())
    assert torch.equal(parts[0].hessian[0], state.hessian[0]) and int(state.n_steps[0]) == 3
    state.drop_optimizer_memory()
    assert state.hessian == [None, None]


def test_resizing_the_lbfgs_history_keeps_the_newest_entries():
    state = lbfgs_init(atoms_to_state(structures()[:2]), lj(), max_history=8)
    for _ in range(8):  # the first step adds no pair
        lbfgs_step(state, lj())
    assert state.n_history.tolist() == [7, 7] and state.s_history.shape[1] == 8
    before_s, before_rho = state.s_history.clone(), state.rho_history.clone()
    grown = state.clone()
    resize_history(grown, 12)
    assert torch.equal(grown.s_history[:, :7], before_s[:, :7]) and not grown.s_history[:, 7:].any()
    resize_history(state, 5)
    assert state.n_history.tolist() == [5, 5] and state.max_history == 5
    assert torch.equal(state.s_history, before_s[:, 2:7]) and torch.equal(state.rho_history, before_rho[:, 2:7])
    lbfgs_step(state, lj(), max_history=5)  # torch-sim passes it at every step
    assert state.n_history.tolist() == [5, 5] and isinstance(state, LBFGSState)


def test_torch_sim_style_functional_use():
    state = atoms_to_state(strained())
    bfgs_state = bfgs_init(state, lj(), cell_filter=CellFilter.unit, alpha=70.0, max_step=0.2)
    lbfgs_state = lbfgs_init(state, lj(), cell_filter="unit", scalar_pressure=0.0)
    assert bfgs_state.relax_cell and lbfgs_state.relax_cell and bfgs_state is not state
    for _ in range(5):
        bfgs_state = bfgs_step(state=bfgs_state, model=lj())
        lbfgs_state = lbfgs_step(state=lbfgs_state, model=lj())
    assert (bfgs_state.n_steps == 5).all() and torch.allclose(bfgs_state.positions, lbfgs_state.positions, atol=1e-6)
    with pytest.raises(ValueError, match="unknown cell filter"):
        bfgs_init(state, lj(), cell_filter="frechet")
