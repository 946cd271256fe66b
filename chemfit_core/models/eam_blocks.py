"""Tabulated EAM evaluated block by block without an autograd graph (relaxations, MD-like loops).

The same two passes over the half list as LAMMPS's ``pair_eam.cpp``: pass 1 sums the
densities ρ_i, pass 2 gives each pair's dE/dr = φ'(r) + F'(ρ_i) ρ_j'(r) + F'(ρ_j) ρ_i'(r).
In eager torch every operation is one pass over a block's pairs, so what counts is
their number and kind (gathers and sums into atoms cost most), not the arithmetic: per
block, the interval index and fraction are computed once and shared by ρ, φ and their
derivatives (the density and pair tables share the r grid), each spline
coefficient is gathered from its own contiguous column (a row gather of [n, 4] costs
four times one column), the pairs beyond the cutoff point at a row of zeros instead of
having every term masked, and 1/r comes from one ``rsqrt``.

The results are LAMMPS's interpolation, as :func:`chemfit_core.models.eam._spline` gives
it: the index is clamped at the end of the table and beyond it the value is the table's
last one with a zero slope.
"""

from __future__ import annotations

import torch

from chemfit_core.engine.neighbors import PairBlock, Pairs
from chemfit_core.engine.state import SimState
from chemfit_core.models.base import Sums


def interval_columns(coeffs: torch.Tensor) -> torch.Tensor:
    """``[4, T·(n+1)]`` columns (c3, c4, c5, c6) of ``T`` splines of ``n`` points (``coeffs``: ``[T, n, 4]``).

    Per spline, rows 0…n−2 are its grid intervals, row n−1 holds the value at the end of
    the table as a constant (what clamping the fraction to 1 gives, slope 0) and row n is
    zero (pairs beyond the cutoff).
    """
    t, n, _ = coeffs.shape
    rows = torch.zeros((t, n + 1, 4), dtype=coeffs.dtype, device=coeffs.device)
    rows[:, : n - 1] = coeffs[:, : n - 1]
    last = coeffs[:, n - 2]
    rows[:, n - 1, 3] = ((last[:, 0] + last[:, 1]) + last[:, 2]) + last[:, 3]  # the interval's value at p = 1
    return rows.reshape(t * (n + 1), 4).T.contiguous()


class _Intervals:
    """Grid interval (row of :func:`interval_columns`) and fraction of every pair of a block."""

    def __init__(self, block: PairBlock, delta: float, n: int, cutoff: float):
        v = block.vectors
        r2 = v[0] * v[0]
        r2.addcmul_(v[1], v[1]).addcmul_(v[2], v[2])
        # 0 inside the cutoff, ≥ 1 beyond (a correctly rounded quotient is < 1 exactly when r² < rc²);
        # arithmetic instead of a mask: masked_fill_ or where on a random mask cost 5x this
        beyond = torch.div(r2, cutoff * cutoff).floor_()
        self.inv_r = torch.rsqrt(r2)  # Å⁻¹
        p = r2.mul_(self.inv_r).div_(delta).clamp_max_(n - 1)  # r in grid units (r2's buffer), p ≥ 0
        p.add_(beyond, alpha=2 * n)  # pairs beyond the cutoff move past the zero row
        row = p.to(torch.long).clamp_max_(n)  # truncation is the floor
        self.row, self.frac, self.n = row, p.sub_(row), n

    def gather(self, columns: torch.Tensor, table: torch.Tensor | None, count: int) -> list[torch.Tensor]:
        """The first ``count`` coefficient columns at every pair's row of spline ``table`` (None: the first)."""
        row = self.row if table is None else self.row + table * (self.n + 1)
        return [columns[k].index_select(0, row) for k in range(count)]

    def value(self, c: list[torch.Tensor]) -> torch.Tensor:
        """((c3 p + c4) p + c5) p + c6 at every pair's fraction p."""
        f = self.frac
        return torch.addcmul(c[3], torch.addcmul(c[2], torch.addcmul(c[1], c[0], f), f), f)

    def slope(self, c: list[torch.Tensor], delta: float) -> torch.Tensor:
        """((3 c3 p + 2 c4) p + c5) / ``delta``: halved and doubled again, which is exact in floating point."""
        f = self.frac
        return torch.addcmul(c[2], torch.addcmul(c[1], c[0], f, value=1.5), f, value=2.0).div_(delta)


def assemble_tabulated(model, state: SimState, pairs: Pairs, compute_stress: bool) -> dict[str, torch.Tensor]:
    """Energies (eV), forces (eV/Å) and stresses (eV/Å³) of tabulated ``model``
    (:class:`~chemfit_core.models.eam.EAM`) in blocks, summed in place; no graph is kept."""
    dtype = state.dtype
    types = model.types(state)
    n_species = len(model.species)
    single = n_species == 1
    rho_cols = model.rhor_rows.to(dtype)
    z2r_cols = model.z2r_rows.to(dtype)
    n, dr, cutoff = model.rhor_spline.shape[1], model.dr, model.cutoff

    def intervals(block: PairBlock) -> _Intervals:
        return _Intervals(block, dr, n, cutoff)

    rho = torch.zeros(state.n_atoms, dtype=dtype, device=state.device)
    for block in pairs.blocks(state, model.block_size):
        at = intervals(block)
        if single:  # one density function: each pair adds the same ρ(r) to both atoms
            rho_j = rho_i = at.value(at.gather(rho_cols, None, 4))
        else:
            ti, tj = types.index_select(0, block.i), types.index_select(0, block.j)
            rho_j, rho_i = at.value(at.gather(rho_cols, tj, 4)), at.value(at.gather(rho_cols, ti, 4))
        rho.index_add_(0, block.i, rho_j)
        rho.index_add_(0, block.j, rho_i)
    sums = Sums(state, dtype, compute_stress, graph=False)
    atom_energy, fp = model.embedding_and_slope(rho, types, False)
    sums.add_atom_energy(atom_energy)
    for block in pairs.blocks(state, model.block_size):
        at = intervals(block)
        fp_i, fp_j = fp.index_select(0, block.i), fp.index_select(0, block.j)
        if single:
            ti = tj = pair_type = None
        else:
            ti, tj = types.index_select(0, block.i), types.index_select(0, block.j)
            pair_type = ti * n_species + tj
        z2r = at.gather(z2r_cols, pair_type, 4)
        phi = at.value(z2r).mul_(at.inv_r)  # φ = z2r / r, eV
        dedr = at.slope(z2r, dr).sub_(phi).mul_(at.inv_r)  # φ'(r)
        if single:
            dedr.addcmul_(fp_i.add_(fp_j), at.slope(at.gather(rho_cols, None, 3), dr))
        else:
            dedr.addcmul_(fp_i, at.slope(at.gather(rho_cols, tj, 3), dr))
            dedr.addcmul_(fp_j, at.slope(at.gather(rho_cols, ti, 3), dr))
        sums.add_energy(block, phi)
        dedr_over_r = dedr.mul_(at.inv_r)
        # without a stress the block's own vectors are not needed again: scaled in place
        grad = block.vectors * dedr_over_r if compute_stress else block.vectors.mul_(dedr_over_r)
        sums.add_pair_gradient(block, grad)
    return sums.result()
