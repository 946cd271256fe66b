"""The blocked, in-place evaluation of large structures gives the all-at-once results.

Models evaluate their pairs block by block when no autograd graph is wanted
(relaxations) and all at once, differentiably, when one is (fits). Both paths must
agree to rounding on batches that mix periodicities, small cells and species, with
blocks that cut across systems; the block size must follow the memory budget.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from chemfit_core.engine.neighbors import BYTES_PER_PAIR, PAIR_BLOCK_CPU, NeighborList, pair_block_size
from chemfit_core.engine.state import atoms_to_state
from chemfit_core.models import LennardJones, Morse
from chemfit_core.models.analytic_eam import AnalyticEAM
from chemfit_core.models.eam import EAM
from chemfit_core.models.registry import potential_file


def batch(symbol: str, a: float, second: str | None = None) -> list[Atoms]:
    """A periodic supercell, a small triclinic cell (cutoff beyond half the box), a slab and a cluster."""
    rng = np.random.default_rng(7)
    bulk_cell = bulk(symbol, "fcc", a=a, cubic=True).repeat(3)
    small = bulk(symbol, "fcc", a=a)  # 1 atom, primitive (triclinic)
    small = small.repeat((2, 1, 1))
    slab = bulk(symbol, "fcc", a=a, cubic=True).repeat((2, 2, 2))
    slab.pbc = [True, True, False]
    cluster = bulk(symbol, "fcc", a=a, cubic=True).repeat((2, 2, 1))
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    out = [bulk_cell, small, slab, cluster]
    for atoms in out:
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        if second:
            atoms.symbols[::3] = second
    return out


def lj_two_species() -> LennardJones:
    return LennardJones(
        epsilon=[[0.0104, 0.0124], [0.0124, 0.0140]], sigma=[[3.40, 3.52], [3.52, 3.65]], cutoff=8.5, species=(18, 36)
    )


CASES = {
    "lj": (lambda: LennardJones(0.0104, 3.40, cutoff=8.5), ("Ar", 5.26, None)),
    "lj-two-species": (lj_two_species, ("Ar", 5.26, "Kr")),
    "morse": (lambda: Morse(0.34, 1.36, 2.57, cutoff=7.0, shift=True), ("Cu", 3.615, None)),
    "eam": (lambda: EAM.from_setfl(potential_file("Cu_mishin1.eam.alloy")), ("Cu", 3.615, None)),
    "analytic-eam": (lambda: AnalyticEAM(), ("Cu", 3.615, None)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_blocked_evaluation_equals_all_at_once(name):
    make, (symbol, a, second) = CASES[name]
    structures = batch(symbol, a, second)
    model = make().to(torch.float64)
    graph_state = atoms_to_state(structures)
    graph_state.positions.requires_grad_(True)
    whole = model(graph_state, compute_stress=True)  # a graph to keep: one differentiable block
    assert whole["energy"].requires_grad
    for block_size in (5, 1000, 10**9):
        model.block_size = block_size
        with torch.no_grad():
            blocked = model(atoms_to_state(structures), compute_stress=True)
        assert not blocked["energy"].requires_grad
        scale = float(whole["forces"].detach().abs().max())
        np.testing.assert_allclose(blocked["energy"], whole["energy"].detach(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(blocked["forces"], whole["forces"].detach(), rtol=0, atol=1e-12 * scale)
        stress_scale = float(whole["stress"].detach().abs().max())
        np.testing.assert_allclose(blocked["stress"], whole["stress"].detach(), rtol=0, atol=1e-12 * stress_scale)


def test_blocks_cover_every_pair_once_within_the_memory_budget():
    state = atoms_to_state(batch("Ar", 5.26))
    pairs = NeighborList(8.5, skin=0.5).pairs(state)
    budget = 100 * BYTES_PER_PAIR + 17  # bytes: room for 100 pairs
    size = pair_block_size(torch.device("cuda"), memory_bytes=budget)
    assert size == 100
    assert pair_block_size(torch.device("cpu")) == PAIR_BLOCK_CPU * torch.get_num_threads()
    assert pair_block_size(torch.device("cpu"), memory_bytes=1) == 1
    blocks = list(pairs.blocks(state, size))
    assert all(b.i.numel() <= size for b in blocks) and len(blocks) == -(-pairs.n_pairs // size)
    assert torch.equal(torch.cat([b.i for b in blocks]), pairs.i)
    assert torch.equal(torch.cat([b.j for b in blocks]), pairs.j)
    assert torch.equal(torch.cat([b.system for b in blocks]), pairs.system)
    # the compact list's vectors (images only where shifted) equal every pair's shift · cell
    np.testing.assert_allclose(torch.cat([b.vectors for b in blocks], dim=1), pairs.vectors(state), rtol=0, atol=1e-12)
    shifted = pairs.shifts.abs().sum(1) > 0
    assert torch.equal(torch.nonzero(shifted).flatten(), pairs.image)
    assert pairs.pi.dtype == torch.int32 and pairs.pj.dtype == torch.int32
