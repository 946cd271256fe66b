"""A compiled cell-list builder of the half neighbour list of one large system on a CPU.

The atoms are wrapped into the cell along the periodic axes and sorted into bins at least
``cutoff / BIN_DIVISIONS`` wide (perpendicular widths, so triclinic cells work); along an open
axis the bins span the atoms' extent. Atom by atom, in index order, the builder looks through the
bins around it for the atoms of higher index (within a bin the atoms are in index order, so these
are the bin's last ones) and keeps what is within the cutoff, as vesin keeps a half list: ``i < j``,
and a pair of an atom with its own image once. The pairs of a group of atoms are gathered in a
small buffer and written straight in the interleaved order of
:func:`chemfit_core.engine.neighbors._interleaved`, so the list needs no sort and no temporary of its
size: the build takes the result (8 bytes a pair, 20 more a pair through a periodic image) and about
100 bytes an atom. The result arrays are sized from an estimate of the pairs (untouched memory is
not resident) and resized in place when short or at the end.
"""

from __future__ import annotations

import numba
import numpy as np

BIN_DIVISIONS = 1
"""Bins per cutoff length: neighbours are searched up to ``BIN_DIVISIONS`` bins away."""
MAX_BINS_PER_ATOM = 2.0
"""Bins allowed per atom (a sparse system with far-apart atoms gets wider bins instead)."""
SLACK = 1.15
"""Room the result arrays get beyond the estimated number of pairs (only what is written is resident)."""


def half_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, group: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Half list of the atoms at ``positions`` [n, 3] (Å) in ``cell`` [3, 3] (rows, Å) within ``cutoff`` (Å).

    Returns int32 ``i``, ``j`` (sorted by ``i``, interleaved per ``group`` atoms), the positions of
    the pairs with a nonzero lattice shift (int64, ascending) and their int32 shifts [n_image, 3]
    (vector = ``positions[j] - positions[i] + shift @ cell``); None for no atoms or where the
    periodic rows of ``cell`` are degenerate (the caller then uses another builder).
    """
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    periodic = np.ascontiguousarray(pbc, dtype=np.bool_).reshape(3)
    basis = _binning_basis(np.asarray(cell, dtype=np.float64).reshape(3, 3), periodic)
    n = len(pos)
    if basis is None or n == 0:
        return None
    frac, wraps = _wrapped_fractions(pos, np.linalg.inv(basis), periodic)
    lo = np.where(periodic, 0.0, frac.min(axis=0))
    span = np.where(periodic, 1.0, frac.max(axis=0) - lo)
    normals = np.cross(basis[[1, 2, 0]], basis[[2, 0, 1]])
    extent = abs(np.linalg.det(basis)) / np.linalg.norm(normals, axis=1) * span  # Å, perpendicular
    size = cutoff / BIN_DIVISIONS * (1 + 1e-9)
    n_bins = np.maximum(1, np.floor(extent / size)).astype(np.int64)
    while n_bins.prod() > MAX_BINS_PER_ATOM * n + 27:
        size *= 1.25
        n_bins = np.maximum(1, np.floor(extent / size)).astype(np.int64)
    bin_width = extent / n_bins
    reach = np.ceil(cutoff * (1 + 1e-9) / np.maximum(bin_width, 1e-300))
    reach = np.where(periodic, reach, np.minimum(reach, n_bins - 1)).astype(np.int64)
    grids = np.meshgrid(*[np.arange(-r, r + 1, dtype=np.int64) for r in reach.tolist()], indexing="ij")
    offsets = np.ascontiguousarray(np.stack(grids, axis=-1).reshape(-1, 3))  # every bin offset within reach
    scale = np.where(span > 0, n_bins / np.where(span > 0, span, 1.0), 0.0)
    order, rank, bin_of, starts = _sort_into_bins(frac, lo, scale, n_bins)
    sorted_pos = frac[order] @ basis  # wrapped Cartesian positions in bin order, Å
    sorted_wraps = wraps[order]
    del frac, wraps
    searched = abs(np.linalg.det(basis)) * np.prod(span) / n_bins.prod() * len(offsets)  # Å³ around an atom
    sphere = min(1.0, 4 / 3 * np.pi * cutoff**3 / searched) if searched > 0 else 1.0
    estimate = int(_candidates(starts, n_bins, periodic, offsets) * sphere / 2 * SLACK) + 1024
    i = np.empty(estimate, dtype=np.int32)
    j = np.empty(estimate, dtype=np.int32)
    image = np.empty(estimate // 8 + 1024, dtype=np.int64)
    image_shifts = np.empty((len(image), 3), dtype=np.int32)
    args = (sorted_pos, sorted_wraps, order, rank, bin_of, starts, n_bins, periodic, basis, offsets, cutoff**2, group)
    scratch_j, scratch_s = np.empty(group * 128, dtype=np.int32), np.empty((group * 128, 3), dtype=np.int32)
    atom, place, m = 0, 0, 0
    while True:
        atom, place, m, pairs_needed, images_needed = _fill(
            *args, atom, place, m, i, j, image, image_shifts, scratch_j, scratch_s
        )
        if atom >= n:
            break
        if pairs_needed > len(scratch_j):  # a group had more pairs than the scratch holds
            scratch_j, scratch_s = np.empty(2 * pairs_needed, np.int32), np.empty((2 * pairs_needed, 3), np.int32)
        if place + pairs_needed > len(i):
            size = max(int(len(i) * 1.25), place + pairs_needed)
            i.resize(size, refcheck=False)
            j.resize(size, refcheck=False)
        if m + images_needed > len(image):
            size = max(int(len(image) * 1.5), m + images_needed)
            image.resize(size, refcheck=False)
            image_shifts.resize((size, 3), refcheck=False)
    for array, size in ((i, place), (j, place), (image, m)):
        array.resize(size, refcheck=False)
    image_shifts.resize((m, 3), refcheck=False)
    return i, j, image, image_shifts


def _binning_basis(cell: np.ndarray, periodic: np.ndarray) -> np.ndarray | None:
    """The cell with its open rows replaced by orthonormal vectors normal to the periodic rows (any
    open rows, zero ones too, give a regular basis); None if the periodic rows are degenerate."""
    rows = np.flatnonzero(periodic)
    lengths = np.linalg.norm(cell[rows], axis=1)
    if np.any(lengths < 1e-12):
        return None
    basis = cell.copy()
    if len(rows) == 3:
        return basis if abs(np.linalg.det(basis)) > 1e-9 * lengths.prod() else None
    if len(rows) == 0:
        return np.eye(3)
    open_rows = np.flatnonzero(~periodic)
    if len(rows) == 2:
        normal = np.cross(cell[rows[0]], cell[rows[1]])
        if np.linalg.norm(normal) < 1e-9 * lengths.prod():
            return None
        basis[open_rows[0]] = normal / np.linalg.norm(normal)
        return basis
    axis = cell[rows[0]] / lengths[0]
    u = np.cross(axis, np.eye(3)[int(np.argmin(np.abs(axis)))])
    u /= np.linalg.norm(u)
    basis[open_rows[0]], basis[open_rows[1]] = u, np.cross(axis, u)
    return basis


@numba.njit(cache=True, nogil=True)
def _wrapped_fractions(pos, inverse, periodic):  # pragma: no cover - compiled
    """Fractional coordinates, wrapped into [0, 1) along periodic axes, and the wraps (int32)."""
    n = pos.shape[0]
    frac = np.empty((n, 3))
    wraps = np.zeros((n, 3), dtype=np.int32)
    for a in range(n):
        for c in range(3):
            f = pos[a, 0] * inverse[0, c] + pos[a, 1] * inverse[1, c] + pos[a, 2] * inverse[2, c]
            if periodic[c]:
                w = np.floor(f)
                f -= w
                if f >= 1.0:  # rounding of a tiny negative f
                    f = 0.0
                    w += 1.0
                wraps[a, c] = np.int32(w)
            frac[a, c] = f
    return frac, wraps


@numba.njit(cache=True, nogil=True)
def _sort_into_bins(frac, lo, scale, n_bins):  # pragma: no cover - compiled
    """Atoms sorted by bin, in index order within a bin (int32), every atom's place in that order,
    the bin of every place (int32) and each bin's first place (int64)."""
    n = frac.shape[0]
    total = n_bins[0] * n_bins[1] * n_bins[2]
    which = np.empty(n, dtype=np.int32)
    starts = np.zeros(total + 1, dtype=np.int64)
    for a in range(n):
        b = 0
        for c in range(3):
            k = min(max(int((frac[a, c] - lo[c]) * scale[c]), 0), n_bins[c] - 1)
            b = b * n_bins[c] + k
        which[a] = b
        starts[b + 1] += 1
    for b in range(total):
        starts[b + 1] += starts[b]
    fill = starts[:-1].copy()
    order = np.empty(n, dtype=np.int32)
    rank = np.empty(n, dtype=np.int32)
    bin_of = np.empty(n, dtype=np.int32)
    for a in range(n):
        p = fill[which[a]]
        order[p], rank[a], bin_of[p] = a, p, which[a]
        fill[which[a]] = p + 1
    return order, rank, bin_of, starts


@numba.njit(cache=True, nogil=True)
def _wrap_bin(c, n, periodic):  # pragma: no cover - compiled
    """Bin ``c`` along an axis of ``n`` bins brought into range and its image; ``(-1, 0)`` past an open side."""
    s = 0
    while c < 0:
        c += n
        s -= 1
    while c >= n:
        c -= n
        s += 1
    if s != 0 and not periodic:
        return -1, 0
    return c, s


@numba.njit(cache=True, nogil=True)
def _neighbour_bin(bx, by, bz, offset, n_bins, periodic):  # pragma: no cover - compiled
    """The bin ``offset`` away from bin ``(bx, by, bz)`` and the lattice shift of its image; -1 past an open side."""
    cx, s0 = _wrap_bin(bx + offset[0], n_bins[0], periodic[0])
    cy, s1 = _wrap_bin(by + offset[1], n_bins[1], periodic[1])
    cz, s2 = _wrap_bin(bz + offset[2], n_bins[2], periodic[2])
    if cx < 0 or cy < 0 or cz < 0:
        return -1, 0, 0, 0
    return (cx * n_bins[1] + cy) * n_bins[2] + cz, s0, s1, s2


@numba.njit(cache=True, nogil=True)
def _candidates(starts, n_bins, periodic, offsets):  # pragma: no cover - compiled
    """Atom pairs (with images) in neighbouring bins: the distances a full search would compute."""
    total = 0
    for bx in range(n_bins[0]):
        for by in range(n_bins[1]):
            for bz in range(n_bins[2]):
                b = (bx * n_bins[1] + by) * n_bins[2] + bz
                for o in range(offsets.shape[0]):
                    c = _neighbour_bin(bx, by, bz, offsets[o], n_bins, periodic)[0]
                    if c >= 0:
                        total += (starts[b + 1] - starts[b]) * (starts[c + 1] - starts[c])
    return total


@numba.njit(cache=True, nogil=True)
def _fill(
    pos, wraps, order, rank, bin_of, starts, n_bins, periodic, basis, offsets, cutoff2, group,
    atom, place, m, i_out, j_out, image_out, shifts_out, scratch_j, scratch_s,
):  # pragma: no cover - compiled  # fmt: skip
    """Write the pairs of atoms ``atom``, ``atom + 1``, ... from list place ``place`` (image ``m``),
    group by group, gathering a group's pairs in ``scratch_j``, ``scratch_s``; stop at the first
    group the arrays have no room for. Returns the next atom, place and image, and the pairs and
    images that group needs."""
    n = order.shape[0]
    room = scratch_j.shape[0]
    first = np.empty(group + 1, dtype=np.int64)
    for a0 in range(atom, n, group):
        a1 = min(a0 + group, n)
        k, images, width = 0, 0, 0
        for a in range(a0, a1):
            first[a - a0] = k
            p = rank[a]
            b = bin_of[p]
            bx, by, bz = b // (n_bins[1] * n_bins[2]), (b // n_bins[2]) % n_bins[1], b % n_bins[2]
            x0, x1, x2 = pos[p, 0], pos[p, 1], pos[p, 2]
            w0, w1, w2 = wraps[p, 0], wraps[p, 1], wraps[p, 2]
            for o in range(offsets.shape[0]):
                c, s0, s1, s2 = _neighbour_bin(bx, by, bz, offsets[o], n_bins, periodic)
                if c < 0:
                    continue
                y0 = x0 - s0 * basis[0, 0] - s1 * basis[1, 0] - s2 * basis[2, 0]
                y1 = x1 - s0 * basis[0, 1] - s1 * basis[1, 1] - s2 * basis[2, 1]
                y2 = x2 - s0 * basis[0, 2] - s1 * basis[1, 2] - s2 * basis[2, 2]
                q_end = starts[c + 1]
                q0 = q_end
                while q0 > starts[c] and order[q0 - 1] > a:  # the bin's atoms of higher index: its last ones
                    q0 -= 1
                if q0 > starts[c] and order[q0 - 1] == a and (s0 > 0 or (s0 == 0 and (s1 > 0 or (s1 == 0 and s2 > 0)))):
                    q0 -= 1  # the atom's own image, kept once (from the lexicographically positive shift)
                for q in range(q0, q_end):
                    d0, d1, d2 = pos[q, 0] - y0, pos[q, 1] - y1, pos[q, 2] - y2
                    if d0 * d0 + d1 * d1 + d2 * d2 < cutoff2:
                        t0 = s0 + w0 - wraps[q, 0]  # the shift between the unwrapped positions
                        t1 = s1 + w1 - wraps[q, 1]
                        t2 = s2 + w2 - wraps[q, 2]
                        if k < room:
                            scratch_j[k] = order[q]
                            scratch_s[k, 0], scratch_s[k, 1], scratch_s[k, 2] = t0, t1, t2
                        if t0 != 0 or t1 != 0 or t2 != 0:
                            images += 1
                        k += 1
            width = max(width, k - first[a - a0])
        first[a1 - a0] = k
        if k > room or place + k > i_out.shape[0] or m + images > image_out.shape[0]:
            return a0, place, m, k, images
        for r in range(width):  # the r-th pair of every atom of the group, atom by atom
            for t in range(a1 - a0):
                if first[t + 1] - first[t] > r:
                    s = first[t] + r
                    i_out[place] = a0 + t
                    j_out[place] = scratch_j[s]
                    if scratch_s[s, 0] != 0 or scratch_s[s, 1] != 0 or scratch_s[s, 2] != 0:
                        image_out[m] = place
                        shifts_out[m, 0], shifts_out[m, 1], shifts_out[m, 2] = (
                            scratch_s[s, 0], scratch_s[s, 1], scratch_s[s, 2]
                        )  # fmt: skip
                        m += 1
                    place += 1
    return n, place, m, 0, 0
