"""Lennard-Jones on a CPU as one compiled loop over the half list (numba), as LAMMPS's ``lj/cut`` runs it.

Without a graph to keep (relaxations), :class:`~chemfit_core.models.pair.LennardJones` sums
its pairs here rather than in torch blocks: each pair's distance, energy and force are
computed in registers and summed into the atoms at once. The arithmetic is the torch path's
(:meth:`~chemfit_core.models.pair.LennardJones.pair_terms`): (σ/r)² from r², its cube and
square, E = 4ε[(σ/r)¹² − (σ/r)⁶] and (dE/dr)/r = −24ε[2(σ/r)¹² − (σ/r)⁶]/r². Pairs at or
beyond the cutoff are weighted by 0 (branch-free). Threads: :mod:`chemfit_core.engine.compiled`.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from chemfit_core.engine.compiled import ListArrays, as_array, result_buffers, run_ranges, summed_results, thread_ranges
from chemfit_core.engine.neighbors import Pairs
from chemfit_core.engine.state import SimState


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _lj_forces(
    pos,
    pi,
    pj,
    image,
    offsets,
    types,
    single,
    system,
    eps,
    sig2,
    e_shift,
    rc2,
    start,
    stop,
    stress,
    energy,
    forces,
    virial,
):
    """Pairs ``start:stop``: energies into ``energy`` (per system), forces, and the virial."""
    k = np.searchsorted(image, start)
    n_image = image.shape[0]
    ta = tb = 0
    for p in range(start, stop):
        a, b = pi[p], pj[p]
        dx = pos[b, 0] - pos[a, 0]
        dy = pos[b, 1] - pos[a, 1]
        dz = pos[b, 2] - pos[a, 2]
        if k < n_image and image[k] == p:
            dx += offsets[0, k]
            dy += offsets[1, k]
            dz += offsets[2, k]
            k += 1
        r2 = dx * dx + dy * dy + dz * dz
        w = 1.0 if r2 < rc2 else 0.0
        if not single:
            ta, tb = types[a], types[b]
        e4 = 4.0 * eps[ta, tb]
        sr2 = sig2[ta, tb] / r2
        sr6 = sr2 * sr2 * sr2
        sr12 = sr6 * sr6
        s = system[a]
        energy[s] += w * (e4 * (sr12 - sr6) - e_shift[ta, tb])
        g = w * (-6.0 * e4 * (2.0 * sr12 - sr6) / r2)
        gx, gy, gz = g * dx, g * dy, g * dz
        forces[a, 0] += gx
        forces[a, 1] += gy
        forces[a, 2] += gz
        forces[b, 0] -= gx
        forces[b, 1] -= gy
        forces[b, 2] -= gz
        if stress:
            virial[s, 0, 0] += dx * gx
            virial[s, 0, 1] += dx * gy
            virial[s, 0, 2] += dx * gz
            virial[s, 1, 0] += dy * gx
            virial[s, 1, 1] += dy * gy
            virial[s, 1, 2] += dy * gz
            virial[s, 2, 0] += dz * gx
            virial[s, 2, 1] += dz * gy
            virial[s, 2, 2] += dz * gz


def assemble_lennard_jones(model, state: SimState, pairs: Pairs, compute_stress: bool) -> dict[str, torch.Tensor]:
    """Energies (eV), forces (eV/Å) and stresses (eV/Å³) of ``model``
    (:class:`~chemfit_core.models.pair.LennardJones`, its tail correction aside) on a CPU, without a graph."""
    arrays = ListArrays.of(state, pairs)
    kind = arrays.float_type
    types = as_array(model.types(state), np.int64)
    eps = model.epsilon.detach().to(state.dtype)
    sig = model.sigma.detach().to(state.dtype)
    if model.shift:
        src6 = (sig / model.cutoff) ** 6
        e_shift = 4 * eps * (src6 * src6 - src6)
    else:
        e_shift = torch.zeros_like(eps)
    ranges = thread_ranges(pairs.n_pairs)
    parts = result_buffers(state, arrays, compute_stress, len(ranges))
    single = len(model.species) == 1
    args = (*arrays.loop_arguments, types, single, arrays.system)
    args += (as_array(eps, kind), as_array(sig * sig, kind), as_array(e_shift, kind), kind(model.cutoff**2))
    run_ranges(_lj_forces, ranges, [(compute_stress, *part) for part in parts], args)
    return summed_results(state, parts, compute_stress)
