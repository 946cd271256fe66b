"""Tabulated EAM on a CPU as two compiled loops over the half list (numba), as LAMMPS's ``pair_eam.cpp`` runs it.

Eager torch evaluates a block of pairs as ~90 separate passes (gathers, fused multiply-adds,
sums into atoms); here each pair is read once per pass and its spline rows, distance,
energy and force are computed in registers: pass 1 sums the densities ρ_i, F(ρ) and F'(ρ)
come from the model (per atom, in torch), pass 2 gives each pair's

    dE/dr = φ'(r) + F'(ρ_i) ρ'_j(r) + F'(ρ_j) ρ'_i(r)

and sums energies, forces and the virial. The interpolation is LAMMPS's, as
:func:`chemfit_core.models.eam._spline` gives it: index clamped to the table, fraction
clamped at 1 (zero slope beyond the table's end); pairs at or beyond the cutoff add nothing.

Work is split into contiguous ranges of the list, one per intra-op thread, each summing
into its own buffers (:mod:`chemfit_core.engine.compiled`). Results equal the torch blocked path
(:func:`chemfit_core.models.eam_blocks.assemble_tabulated`) to rounding; the order of the
sums differs.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from chemfit_core.engine.compiled import ListArrays, as_array, result_buffers, run_ranges, summed_results, thread_ranges
from chemfit_core.engine.neighbors import Pairs
from chemfit_core.engine.state import SimState


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _densities(pos, pi, pj, image, offsets, types, single, rhor, dr, cutoff, start, stop, rho):
    """Pass 1 over pairs ``start:stop``: add ρ_tj(r) to atom i and ρ_ti(r) to atom j.

    Branch-free: pairs beyond the cutoff (the list's skin, a third of it, in random order)
    are evaluated at the clamped table end and weighted by 0 (a branch mispredicted on them
    cost more than the arithmetic)."""
    n = rhor.shape[1]
    rc2 = cutoff * cutoff
    inv_dr = 1.0 / dr
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
        q = np.sqrt(r2) * inv_dr
        m = max(0, min(int(q), n - 2))
        f = min(q - m, 1.0)
        if not single:
            ta, tb = types[a], types[b]
        rho_b = w * (((rhor[tb, m, 0] * f + rhor[tb, m, 1]) * f + rhor[tb, m, 2]) * f + rhor[tb, m, 3])
        rho[a] += rho_b
        if single:
            rho[b] += rho_b
        else:
            rho[b] += w * (((rhor[ta, m, 0] * f + rhor[ta, m, 1]) * f + rhor[ta, m, 2]) * f + rhor[ta, m, 3])


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _forces(
    pos,
    pi,
    pj,
    image,
    offsets,
    types,
    single,
    system,
    rhor,
    z2r,
    fp,
    dr,
    cutoff,
    start,
    stop,
    stress,
    energy,
    forces,
    virial,
):
    """Pass 2 over pairs ``start:stop``: pair energies into ``energy`` (per system), forces, and the virial
    (branch-free beyond the cutoff as in :func:`_densities`; slopes are 0 where the fraction is clamped)."""
    n = rhor.shape[1]
    n_species = rhor.shape[0]
    rc2 = cutoff * cutoff
    inv_dr = 1.0 / dr
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
        inv_r = 1.0 / np.sqrt(r2)
        q = r2 * inv_r * inv_dr
        m = max(0, min(int(q), n - 2))
        f = q - m
        ws = w if f <= 1.0 else 0.0  # the slope's weight: zero where the fraction is clamped
        f = min(f, 1.0)
        if not single:
            ta, tb = types[a], types[b]
        z = ta * n_species + tb
        phi = w * (((z2r[z, m, 0] * f + z2r[z, m, 1]) * f + z2r[z, m, 2]) * f + z2r[z, m, 3]) * inv_r
        dz2r = ((3.0 * z2r[z, m, 0] * f + 2.0 * z2r[z, m, 1]) * f + z2r[z, m, 2]) * inv_dr
        drho_b = ((3.0 * rhor[tb, m, 0] * f + 2.0 * rhor[tb, m, 1]) * f + rhor[tb, m, 2]) * inv_dr
        if single:  # one density function: ρ'(r) is the same from both sides
            drho_a = drho_b
        else:
            drho_a = ((3.0 * rhor[ta, m, 0] * f + 2.0 * rhor[ta, m, 1]) * f + rhor[ta, m, 2]) * inv_dr
        dedr = (ws * dz2r - phi) * inv_r + ws * (fp[a] * drho_b + fp[b] * drho_a)
        s = system[a]
        energy[s] += phi
        g = dedr * inv_r
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


def assemble_compiled(model, state: SimState, pairs: Pairs, compute_stress: bool) -> dict[str, torch.Tensor]:
    """Energies (eV), forces (eV/Å) and stresses (eV/Å³) of tabulated ``model``
    (:class:`~chemfit_core.models.eam.EAM`) on a CPU, without a graph (see the module's docstring)."""
    arrays = ListArrays.of(state, pairs)
    kind = arrays.float_type
    types = as_array(model.types(state), np.int64)
    rhor, z2r = as_array(model.rhor_spline, kind), as_array(model.z2r_spline, kind)
    dr, cutoff = kind(model.dr), kind(model.cutoff)
    single = len(model.species) == 1
    ranges = thread_ranges(pairs.n_pairs)

    rho_parts = [(np.zeros(state.n_atoms, dtype=kind),) for _ in ranges]
    run_ranges(_densities, ranges, rho_parts, (*arrays.loop_arguments, types, single, rhor, dr, cutoff))
    rho = torch.from_numpy(np.sum([p[0] for p in rho_parts], axis=0) if len(ranges) > 1 else rho_parts[0][0])
    atom_energy, fp = model.embedding_and_slope(rho, model.types(state).cpu(), False)

    parts = result_buffers(state, arrays, compute_stress, len(ranges))
    fp_array = as_array(fp, kind)
    args = (*arrays.loop_arguments, types, single, arrays.system, rhor, z2r, fp_array, dr, cutoff)
    run_ranges(_forces, ranges, [(compute_stress, *part) for part in parts], args)
    out = summed_results(state, parts, compute_stress)
    out["energy"].index_add_(0, state.system_idx, atom_energy.to(state.device, state.dtype))
    return out
