"""The compiled cell list against ASE's neighbour list (an independent implementation).

Every case must give the same half list pair for pair (atom indices and lattice shift, each
unordered pair once), on the cell shapes users have: rattled bulk, cells smaller than the
cutoff, positions outside the cell, triclinic cells, molecules, slabs, wires, one atom.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from chemfit_core.engine import cell_list, neighbors
from chemfit_core.engine.cell_list import half_list
from chemfit_core.errors import ChemFitError


def canonical(i, j, shifts) -> set[tuple[int, int, tuple[int, int, int]]]:
    """Each pair once as ``(low, high, shift from low to high)``."""
    out = set()
    for a, b, s in zip(np.asarray(i).tolist(), np.asarray(j).tolist(), np.asarray(shifts).astype(int).tolist()):
        s = tuple(s)
        if a > b or (a == b and s < (0, 0, 0)):
            a, b, s = b, a, tuple(-x for x in s)
        out.add((a, b, s))
    return out


def ours(atoms: Atoms, cutoff: float, group: int = 256):
    i, j, image, image_shifts = half_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, group)
    shifts = np.zeros((len(i), 3), dtype=int)
    shifts[image] = image_shifts
    return i, j, image, shifts


def reference(atoms: Atoms, cutoff: float):
    i, j, shifts = neighbor_list("ijS", atoms, cutoff, self_interaction=False)
    return canonical(i, j, shifts)


def rattled(atoms: Atoms, amount: float, seed: int) -> Atoms:
    atoms.rattle(amount, seed=seed)
    return atoms


def case(name: str) -> tuple[Atoms, float]:
    rng = np.random.default_rng(7)
    if name == "rattled fcc":
        return rattled(bulk("Cu", "fcc", a=3.615, cubic=True).repeat(3), 0.1, 1), 5.5
    if name == "primitive cell smaller than the cutoff":
        return bulk("Cu", "fcc", a=3.615), 6.0
    if name == "positions outside the cell":
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
        atoms.positions += rng.normal(0, 0.3, atoms.positions.shape) - 20.0
        return atoms, 9.0
    if name == "triclinic":
        return rattled(bulk("Si", "diamond", a=5.43).repeat((2, 3, 2)), 0.05, 2), 4.0
    if name == "molecule":
        return Atoms("Ar20", positions=rng.uniform(0, 10, (20, 3))), 5.0
    if name == "slab":
        atoms = rattled(bulk("Cu", "fcc", a=3.615, cubic=True).repeat((3, 3, 2)), 0.05, 3)
        atoms.pbc = [True, True, False]
        return atoms, 5.0
    if name == "wire":
        atoms = bulk("Cu", "fcc", a=3.615, cubic=True).repeat((4, 1, 1))
        atoms.pbc = [True, False, False]
        return atoms, 5.0
    if name == "one atom":
        return Atoms("Ar", cell=[3, 3, 3], pbc=True), 7.0
    if name == "hcp":
        return rattled(bulk("Co", "hcp", a=2.5, c=4.1), 0.02, 4), 6.0
    raise KeyError(name)


CASES = [
    "rattled fcc",
    "primitive cell smaller than the cutoff",
    "positions outside the cell",
    "triclinic",
    "molecule",
    "slab",
    "wire",
    "one atom",
    "hcp",
]


@pytest.mark.parametrize("name", CASES)
def test_half_list_equals_ase_pair_for_pair(name):
    atoms, cutoff = case(name)
    i, j, image, shifts = ours(atoms, cutoff)
    assert i.dtype == np.int32 and j.dtype == np.int32 and image.dtype == np.int64
    found = canonical(i, j, shifts)
    assert len(found) == len(i), "a pair is listed twice"
    assert found == reference(atoms, cutoff)
    assert np.array_equal(image, np.flatnonzero(shifts.any(axis=1)))
    vectors = atoms.positions[j] - atoms.positions[i] + shifts @ atoms.cell.array
    assert float(np.linalg.norm(vectors, axis=1).max(initial=0)) < cutoff


def test_the_list_is_in_the_interleaved_order_the_force_loops_read():
    atoms, cutoff = rattled(bulk("Ar", "fcc", a=5.26, cubic=True).repeat(4), 0.05, 5), 9.0
    for group in (256, 7):
        i, j, _, _ = ours(atoms, cutoff, group)
        by_i = np.argsort(i, kind="stable")
        assert np.array_equal(i[by_i][neighbors._interleaved(i[by_i], group)], i)


def test_short_estimates_and_dense_groups_resize_without_losing_pairs(monkeypatch):
    atoms, cutoff = rattled(bulk("Cu", "fcc", a=3.615, cubic=True).repeat(3), 0.1, 1), 10.0
    expected = reference(atoms, cutoff)
    monkeypatch.setattr(cell_list, "SLACK", 0.05)  # the first arrays hold a twentieth of the pairs
    i, j, _, shifts = ours(atoms, cutoff, group=64)  # 64 atoms x ~180 pairs: beyond the scratch's 64 x 128
    assert canonical(i, j, shifts) == expected and len(i) == len(expected)


def test_degenerate_periodic_cells_are_left_to_vesin():
    assert half_list(np.zeros((2, 3)), np.diag([0.0, 5.3, 5.3]), np.array([True] * 3), 5.0) is None
    singular = np.array([[5.3, 0, 0], [10.6, 0, 0], [0, 0, 5.3]])
    assert half_list(np.zeros((2, 3)), singular, np.array([True] * 3), 5.0) is None


def test_the_cpu_list_names_an_atom_with_a_non_finite_position():
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
    positions = torch.tensor(atoms.positions)
    positions[2, 1] = float("nan")
    with pytest.raises(ChemFitError, match="atom 2 has a non-finite position"):
        neighbors._cpu_list(positions, torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc), 9.0)


def test_a_batch_gets_every_system_its_own_list():
    from chemfit_core.engine.state import atoms_to_state

    structures = [case(name)[0] for name in ("rattled fcc", "slab", "molecule", "triclinic")]
    state = atoms_to_state(structures, dtype=torch.float64)
    pairs = neighbors.NeighborList(4.5, skin=0.5).pairs(state)
    first = np.concatenate([[0], np.cumsum([len(a) for a in structures])])
    shifts = pairs.shifts.numpy()
    i, j = pairs.i.numpy(), pairs.j.numpy()
    for s, atoms in enumerate(structures):
        mine = (i >= first[s]) & (i < first[s + 1])
        assert canonical(i[mine] - first[s], j[mine] - first[s], shifts[mine]) == reference(atoms, 5.0)


def strained_pairs_case(strain: float):
    """A rattled argon cell evaluated once, then deformed affinely by ``strain`` along x and sheared."""
    from chemfit_core.engine.state import atoms_to_state
    from chemfit_core.models.pair import LennardJones

    atoms = rattled(bulk("Ar", "fcc", a=5.26, cubic=True).repeat(3), 0.05, 6)
    model = LennardJones(0.0104, 3.40, 8.5)
    state = atoms_to_state([atoms], dtype=torch.float64)
    with torch.no_grad():
        model(state)
    deformation = torch.eye(3, dtype=torch.float64)
    deformation[0, 0] += strain
    deformation[0, 1] += strain / 2
    state.positions = state.positions @ deformation
    state.cell = state.cell @ deformation
    with torch.no_grad():
        kept = model(state)
        fresh = LennardJones(0.0104, 3.40, 8.5)(atoms_to_state(state.to_atoms(), dtype=torch.float64))
    return model.neighbor_list.builds, kept, fresh


def test_an_affinely_deformed_cell_keeps_its_list_while_the_bound_holds():
    builds, kept, fresh = strained_pairs_case(0.02)  # ‖ε‖ ≈ 0.025: 9 Å · 0.025 < 0.5 Å of skin
    assert builds == 1
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(kept[key], fresh[key], rtol=1e-12, atol=1e-14)
    builds, _, _ = strained_pairs_case(0.06)  # 9 Å · 0.07 > 0.5 Å: rebuilt
    assert builds == 2


def test_a_molecule_in_a_box_keeps_its_list_when_the_box_changes():
    from chemfit_core.engine.state import atoms_to_state

    molecule = Atoms("Ar4", positions=[[0, 0, 0], [3.8, 0, 0], [0, 3.8, 0], [0, 0, 3.8]], cell=[20, 20, 20])
    state = atoms_to_state([molecule], dtype=torch.float64)
    neighbour_list = neighbors.NeighborList(8.5, skin=0.5)
    neighbour_list.pairs(state)
    state.cell = state.cell * 1.5  # the box of an open system holds no images
    state.positions = state.positions + 0.1
    neighbour_list.pairs(state)
    assert neighbour_list.builds == 1
