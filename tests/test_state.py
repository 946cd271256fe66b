"""SimState: batching, per-system pbc, splitting and joining, ASE and extxyz round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.io import write

from chemfit_core.engine.state import (
    SimState,
    atoms_to_state,
    concatenate_states,
    detach_state_graph,
)
from chemfit_core.engine.structures import read_structures
from chemfit_core.errors import ChemFitError


def three_systems():
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    crystal.info["label"] = "crystal"
    slab = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    slab.pbc = [True, True, False]
    slab.center(vacuum=5.0, axis=2)
    slab.info["label"] = "slab"
    cluster = molecule("CH4")
    cluster.cell = [8, 8, 8]
    cluster.pbc = False
    cluster.info["label"] = "molecule"
    return [crystal, slab, cluster]


def test_batch_keeps_each_systems_pbc_cell_and_info():
    state = atoms_to_state(three_systems())
    assert state.n_systems == 3 and state.n_atoms == 4 + 8 + 5
    assert state.pbc.tolist() == [[True] * 3, [True, True, False], [False] * 3]
    assert state.n_atoms_per_system.tolist() == [4, 8, 5]
    assert [i["label"] for i in state.info] == ["crystal", "slab", "molecule"]
    assert state.system_idx.tolist() == [0] * 4 + [1] * 8 + [2] * 5


def test_ase_round_trip_is_exact():
    originals = three_systems()
    back = atoms_to_state(originals).to_atoms()
    for a, b in zip(originals, back):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
        assert list(a.pbc) == list(b.pbc) and list(a.numbers) == list(b.numbers)
        assert np.allclose(a.get_masses(), b.get_masses()) and a.info == b.info


def test_split_and_concatenate_are_inverse():
    state = atoms_to_state(three_systems())
    parts = state.split()
    assert [p.n_atoms for p in parts] == [4, 8, 5]
    joined = concatenate_states(parts)
    for name in ("positions", "masses", "cell", "pbc", "atomic_numbers", "system_idx"):
        assert torch.equal(getattr(joined, name), getattr(state, name)), name
    assert joined.info == state.info


def test_indexing_selects_systems_in_the_given_order():
    state = atoms_to_state(three_systems())
    picked = state[[2, 0]]
    assert [i["label"] for i in picked.info] == ["molecule", "crystal"]
    assert picked.n_atoms_per_system.tolist() == [5, 4]
    assert picked.system_idx.tolist() == [0] * 5 + [1] * 4
    assert state[-1].info[0]["label"] == "molecule"
    with pytest.raises(IndexError, match="out of range"):
        state[5]


def test_pop_removes_systems_in_place_and_returns_them():
    state = atoms_to_state(three_systems())
    popped = state.pop([0, 2])
    assert [p.info[0]["label"] for p in popped] == ["crystal", "molecule"]
    assert state.n_systems == 1 and state.info[0]["label"] == "slab"
    assert state.system_idx.tolist() == [0] * 8


def test_to_changes_precision_but_not_integer_fields():
    state = atoms_to_state(three_systems()).to(dtype=torch.float32)
    assert state.positions.dtype == torch.float32 and state.cell.dtype == torch.float32
    assert state.atomic_numbers.dtype == torch.long and state.pbc.dtype == torch.bool


def test_column_vector_cell_is_torch_sims_layout():
    state = atoms_to_state([bulk("Cu", "fcc", a=3.6)])
    assert torch.equal(state.column_vector_cell[0], state.cell[0].T)
    assert torch.allclose(state.volume, torch.tensor([3.6**3 / 4], dtype=torch.float64))


def test_inconsistent_shapes_are_rejected():
    with pytest.raises(ValueError, match="masses has 2 entries for 3 atoms"):
        SimState(torch.zeros(3, 3), torch.ones(2), torch.eye(3), True, torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="system_idx"):
        SimState(
            torch.zeros(2, 3),
            torch.ones(2),
            torch.eye(3).repeat(2, 1, 1),
            True,
            torch.ones(2, dtype=torch.long),
            system_idx=torch.tensor([1, 0]),
        )


def test_extxyz_round_trip_keeps_info(tmp_path):
    path = tmp_path / "structures.extxyz"
    originals = three_systems()
    for k, atoms in enumerate(originals):
        atoms.info["index"] = k
    write(path, originals, format="extxyz")
    back = atoms_to_state(read_structures(path)).to_atoms()
    assert [a.info["label"] for a in back] == ["crystal", "slab", "molecule"]
    assert [a.info["index"] for a in back] == [0, 1, 2]
    assert np.allclose(back[1].positions, originals[1].positions)


def test_reading_missing_or_corrupt_structure_files_names_the_file(tmp_path):
    with pytest.raises(ChemFitError, match="nope.extxyz: structure file not found"):
        read_structures(tmp_path / "nope.extxyz")
    bad = tmp_path / "bad.extxyz"
    bad.write_text("3\nnot a comment line with lattice\nAr 0 0\n")
    with pytest.raises(ChemFitError, match="bad.extxyz, structure 0: could not be read"):
        read_structures(bad)


def two_cells():
    return SimState(
        torch.zeros(3, 3),
        torch.ones(3),
        torch.eye(3).repeat(2, 1, 1) * 4,
        True,
        torch.ones(3, dtype=torch.long),
        system_idx=torch.tensor([0, 0, 1]),
    )


def test_pbc_given_as_torch_sim_gives_it_applies_to_every_system():
    state = two_cells()
    # systems that agree read back as torch-sim's one [3] vector; system_pbc is always per system
    assert state.pbc.tolist() == [True] * 3 and state.system_pbc.tolist() == [[True] * 3] * 2
    state.pbc = [True, False, True]  # assignment is coerced too
    assert state.system_pbc.shape == (2, 3) and state.system_pbc.tolist() == [[True, False, True]] * 2
    assert state.pbc.tolist() == [True, False, True]
    state.pbc = False
    assert not state.pbc.any() and state.pbc.shape == (3,) and state.system_pbc.shape == (2, 3)
    state.pbc = torch.tensor([[True, True, True], [True, True, False]])  # per system, as ours
    assert state.pbc.shape == (2, 3)  # a mixed batch, which one [3] vector cannot express
    assert state.split()[1].pbc.tolist() == [True, True, False]
    assert state.split()[1].system_pbc.tolist() == [[True, True, False]]
    assert state[[1, 1]].pbc.tolist() == [True, True, False]


def test_from_state_overrides_fields_and_shares_nothing():
    state = atoms_to_state(three_systems())
    state.neighbor_lists = ["built"] * 3
    mixed = SimState.from_state(state, pbc=[True, False, True])
    assert mixed.system_pbc.tolist() == [[True, False, True]] * 3
    assert state.pbc.tolist() == [[True] * 3, [True, True, False], [False] * 3]  # the source is untouched
    assert mixed.neighbor_lists == [None] * 3  # lists built for the old geometry are dropped
    copy = SimState.from_state(state)
    assert copy is not state and copy.positions is not state.positions and copy.neighbor_lists == ["built"] * 3
    copy.positions += 1.0
    copy.info[0]["label"] = "changed"
    assert state.positions.max() < copy.positions.max() and state.info[0]["label"] == "crystal"


def test_detach_state_graph_detaches_in_place_and_keeps_values():
    state = atoms_to_state(three_systems())
    masses = state.masses
    state.positions = state.positions.detach().requires_grad_() * 1.5
    values = state.positions.detach().clone()
    assert detach_state_graph(state) is state
    assert not state.positions.requires_grad and state.positions.grad_fn is None
    assert torch.equal(state.positions, values) and state.masses is masses
