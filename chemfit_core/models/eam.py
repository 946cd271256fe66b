"""Embedded-atom models: tabulated LAMMPS files and an analytic form that can be fitted.

E = Σ_i F_{t_i}(ρ_i) + ½ Σ_{i≠j} φ_{t_i t_j}(r_ij),   ρ_i = Σ_{j≠i} ρ_{t_j}(r_ij)

:class:`EAM` reads LAMMPS ``setfl`` (``pair_style eam/alloy``) and ``funcfl``
(``pair_style eam``) files and interpolates them exactly as LAMMPS's ``pair_eam.cpp``
does: the same cubic per grid interval (slopes from a five-point stencil), the same
index clamping at the ends of the grids and the same linear extrapolation of F beyond
the last tabulated density, so energies and forces agree with LAMMPS to rounding.

The fittable analytic form built on the same assembly is
:class:`chemfit_core.models.analytic_eam.AnalyticEAM`.

Forces and stresses of both come from each pair's dE/dr (two passes over the pairs,
LAMMPS's scheme), assembled per atom and per system like the pair models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from chemfit_core.engine.compiled import runs_compiled
from chemfit_core.engine.neighbors import Pairs
from chemfit_core.engine.state import SimState
from chemfit_core.models.base import Model, Sums, tracks_graph
from chemfit_core.models.eam_blocks import assemble_tabulated, interval_columns
from chemfit_core.models.eam_kernel import assemble_compiled
from chemfit_core.models.registry import potential_file, register_model
from chemfit_core.units import LAMMPS_HARTREE_BOHR


def lammps_spline(values: np.ndarray) -> np.ndarray:
    """Per-interval cubic coefficients [c3, c4, c5, c6] of LAMMPS's ``PairEAM::interpolate``.

    f(m + p) = ((c3 p + c4) p + c5) p + c6 for 0 ≤ p ≤ 1 on interval m (grid units).
    """
    f = np.asarray(values, dtype=np.float64)
    n = len(f)
    if n < 5:
        raise ValueError(f"an EAM table needs at least 5 points, got {n}")
    slope = np.empty(n)
    slope[0] = f[1] - f[0]
    slope[1] = 0.5 * (f[2] - f[0])
    slope[n - 2] = 0.5 * (f[n - 1] - f[n - 3])
    slope[n - 1] = f[n - 1] - f[n - 2]
    slope[2 : n - 2] = ((f[0 : n - 4] - f[4:n]) + 8.0 * (f[3 : n - 1] - f[1 : n - 3])) / 12.0
    c4 = np.zeros(n)
    c3 = np.zeros(n)
    c4[:-1] = 3.0 * (f[1:] - f[:-1]) - 2.0 * slope[:-1] - slope[1:]
    c3[:-1] = slope[:-1] + slope[1:] - 2.0 * (f[1:] - f[:-1])
    return np.stack([c3, c4, slope, f], axis=1)


def _evaluate(coeffs: torch.Tensor, x: torch.Tensor, delta: float, table: torch.Tensor | int = 0) -> torch.Tensor:
    """Spline value at ``x`` with LAMMPS's clamping (index in [0, n−2], fraction ≤ 1)."""
    return _spline(coeffs, x, delta, table, derivative=False)[0]


def _spline(
    coeffs: torch.Tensor, x: torch.Tensor, delta: float, table: torch.Tensor | int, derivative: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Spline value at ``x`` and, if asked, its derivative d/dx (0 where the fraction is clamped,
    as autograd of the value gives it)."""
    n = coeffs.shape[-2]
    p = x / delta
    m = torch.clamp(p.detach().floor().long(), 0, n - 2)
    frac = torch.clamp(p - m, max=1.0)
    if isinstance(table, int):
        c = coeffs[table].index_select(0, m)
    else:  # one table per pair or atom: rows of the flattened tables
        c = coeffs.reshape(-1, coeffs.shape[-1]).index_select(0, table * n + m)
    c3, c4, c5, c6 = c.unbind(-1)
    value = ((c3 * frac + c4) * frac + c5) * frac + c6
    if not derivative:
        return value, None
    slope = ((3 * c3 * frac + 2 * c4) * frac + c5) / delta
    return value, torch.where(p - m <= 1.0, slope, torch.zeros_like(slope))


def _read_numbers(lines: list[str], start: int, count: int) -> tuple[np.ndarray, int]:
    """``count`` floats from ``lines[start:]`` (any number per line); returns values and next line."""
    values: list[float] = []
    line = start
    while len(values) < count:
        if line >= len(lines):
            raise ValueError(f"file ends after {len(values)} of {count} expected values")
        values.extend(float(v) for v in lines[line].replace("D", "E").split())
        line += 1
    if len(values) != count:
        raise ValueError(f"expected {count} values, a line boundary gave {len(values)}")
    return np.array(values), line


class _EAMBase(Model):
    """Energy assembly shared by the tabulated and analytic forms."""

    def embedding(self, rho: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def density(self, r: torch.Tensor, tj: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pair(self, r: torch.Tensor, ti: torch.Tensor, tj: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embedding_and_slope(self, rho: torch.Tensor, types: torch.Tensor, graph: bool):
        """F(ρ) (eV) and F'(ρ) per atom; by autograd unless a subclass knows them."""
        with torch.enable_grad():
            rho_in = rho if graph and rho.requires_grad else rho.detach().requires_grad_(True)
            energy = self.embedding(rho_in, types)
            (slope,) = torch.autograd.grad(energy.sum(), rho_in, create_graph=graph)
        return (energy if graph else energy.detach()), slope

    def pair_and_dedr(self, r, ti, tj, fp_i, fp_j, graph: bool):
        """φ(r) (eV) and dE/dr = F'(ρ_i) ρ_j'(r) + F'(ρ_j) ρ_i'(r) + φ'(r) (eV/Å) per pair; by autograd on r."""
        with torch.enable_grad():
            r_in = r if graph and r.requires_grad else r.detach().requires_grad_(True)
            phi = self.pair(r_in, ti, tj)
            if isinstance(ti, int):
                embedded = (fp_i + fp_j) * self.density(r_in, tj)
            else:
                embedded = fp_i * self.density(r_in, tj) + fp_j * self.density(r_in, ti)
            (dedr,) = torch.autograd.grad((embedded + phi).sum(), r_in, create_graph=graph)
        return (phi if graph else phi.detach()), dedr

    def forward(self, state: SimState, compute_stress: bool | None = None) -> dict[str, torch.Tensor]:
        """Energies (eV), forces (eV/Å) and stresses (eV/Å³) of every system of ``state``."""
        pairs = self.neighbor_list.pairs(state)
        stress = self.compute_stress if compute_stress is None else compute_stress
        return self.assemble(state, pairs, stress)

    def assemble(self, state: SimState, pairs: Pairs, compute_stress: bool = True) -> dict[str, torch.Tensor]:
        """Per-system energies, forces and stresses in two passes over the pairs, as LAMMPS does.

        Pass 1 sums the densities ρ_i and gives F(ρ_i) and F'(ρ_i); pass 2 gives each
        pair's dE/dr = F'(ρ_i) ρ_j'(r) + F'(ρ_j) ρ_i'(r) + φ'(r). The derivatives come
        from :meth:`embedding_and_slope` and :meth:`pair_and_dedr`: the splines' own for
        tabulated EAM, else autograd on ρ and on the pair distances alone (elementwise,
        one block at a time), so no graph over the whole structure is built. Without a gradient to
        keep (:func:`~chemfit_core.models.base.tracks_graph`) the pairs are evaluated in
        blocks and summed in place; with one, all at once and differentiably (parameter
        gradients of energies, forces and stresses).
        """
        graph = tracks_graph(self, state)
        types = self.types(state)
        single = len(self.species) == 1
        block_size = 0 if graph else self.block_size
        rho = torch.zeros(state.n_atoms, dtype=state.dtype, device=state.device)
        for block in pairs.blocks(state, block_size):
            block = block.inside(self.cutoff, compact=graph)  # spline tables are finite beyond it
            r = torch.sqrt(block.r2)
            ti, tj = (0, 0) if single else (types[block.i], types[block.j])
            # a half list: each pair adds to both atoms' densities (with the other's function)
            rho_j = block.masked(self.density(r, tj))
            rho_i = rho_j if single else block.masked(self.density(r, ti))
            rho = rho.index_add(0, block.i, rho_j) if graph else rho.index_add_(0, block.i, rho_j)
            rho = rho.index_add(0, block.j, rho_i) if graph else rho.index_add_(0, block.j, rho_i)
        sums = Sums(state, state.dtype, compute_stress, graph)
        atom_energy, fp = self.embedding_and_slope(rho, types, graph)
        sums.add_atom_energy(atom_energy)
        for block in pairs.blocks(state, block_size):
            block = block.inside(self.cutoff, compact=graph)
            ti, tj = (0, 0) if single else (types[block.i], types[block.j])
            r = torch.sqrt(block.r2)
            phi, dedr = self.pair_and_dedr(r, ti, tj, fp.index_select(0, block.i), fp.index_select(0, block.j), graph)
            sums.add_energy(block, block.masked(phi))
            sums.add_pair_gradient(block, block.masked(dedr / (r if graph else r.detach())) * block.vectors)
        return sums.result()


class EAM(_EAMBase):
    """Tabulated EAM from a LAMMPS ``setfl`` or ``funcfl`` file (LAMMPS interpolation).

    Use :meth:`from_setfl` (``pair_style eam/alloy``) or :meth:`from_funcfl`
    (``pair_style eam``, one element). The tables are buffers, not parameters: a
    tabulated potential is evaluated, not fitted (fit :class:`~chemfit_core.models.analytic_eam.AnalyticEAM`).
    """

    def __init__(
        self,
        species: Sequence[int],
        frho: np.ndarray,
        rhor: np.ndarray,
        z2r: np.ndarray,
        drho: float,
        dr: float,
        cutoff: float,
        *,
        style: str,
        file: Path | None = None,
        elements: Sequence[str] = (),
        skin: float = 0.5,
        compute_stress: bool = True,
    ):
        super().__init__(cutoff, species, skin, compute_stress)
        n = len(self.species)
        if frho.shape[0] != n or rhor.shape[0] != n or z2r.shape[:2] != (n, n):
            raise ValueError("EAM tables do not match the number of species")
        self.drho, self.dr = float(drho), float(dr)
        self.rhomax = (frho.shape[1] - 1) * self.drho
        self.style, self.file, self.elements = style, file, list(elements)
        self.compiled = True  # CPU forces without a graph from the compiled loops (eam_kernel); False: torch blocks
        spline = lambda rows: torch.from_numpy(np.stack([lammps_spline(v) for v in rows]))  # noqa: E731
        self.register_buffer("frho_spline", spline(frho))
        self.register_buffer("rhor_spline", spline(rhor))
        self.register_buffer("z2r_spline", spline(z2r.reshape(n * n, -1)))
        # the same splines as contiguous coefficient columns for the blocked path (eam_blocks)
        self.register_buffer("rhor_rows", interval_columns(self.rhor_spline), persistent=False)
        self.register_buffer("z2r_rows", interval_columns(self.z2r_spline), persistent=False)

    @classmethod
    def from_setfl(cls, path: str | Path, species: Sequence[int] | None = None, **options) -> EAM:
        """Read a DYNAMO ``setfl`` file (``*.eam.alloy``), all its elements in file order."""
        from ase.data import atomic_numbers

        path = Path(path)
        lines = path.read_text().splitlines()
        try:
            header = lines[3].split()
            elements = header[1 : 1 + int(header[0])]
            nrho, drho, nr, dr, cutoff = lines[4].split()[:5]
            nrho, nr, drho, dr, cutoff = int(nrho), int(nr), float(drho), float(dr), float(cutoff)
            line = 5
            frho, rhor = [], []
            for _ in elements:
                line += 1  # Z, mass, lattice constant, lattice
                values, line = _read_numbers(lines, line, nrho)
                frho.append(values)
                values, line = _read_numbers(lines, line, nr)
                rhor.append(values)
            n = len(elements)
            z2r = np.zeros((n, n, nr))
            for a in range(n):
                for b in range(a + 1):
                    z2r[a, b], line = _read_numbers(lines, line, nr)
                    z2r[b, a] = z2r[a, b]
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable setfl file ({exc})") from None
        if species is not None and list(species) != [atomic_numbers[e] for e in elements]:
            raise ValueError(f"{path} holds {elements}; species {list(species)} do not match")
        return cls(
            [atomic_numbers[e] for e in elements],
            np.array(frho),
            np.array(rhor),
            z2r,
            drho,
            dr,
            cutoff,
            style="eam/alloy",
            file=path,
            elements=elements,
            **options,
        )

    @classmethod
    def from_funcfl(cls, path: str | Path, species: Sequence[int] | None = None, **options) -> EAM:
        """Read a DYNAMO ``funcfl`` file (``*.eam``, one element); φ = 27.2·0.529·Z(r)²/r."""
        from ase.data import chemical_symbols

        path = Path(path)
        lines = path.read_text().splitlines()
        try:
            z = int(lines[1].split()[0])
            nrho, drho, nr, dr, cutoff = lines[2].split()[:5]
            nrho, nr, drho, dr, cutoff = int(nrho), int(nr), float(drho), float(dr), float(cutoff)
            frho, line = _read_numbers(lines, 3, nrho)
            zr, line = _read_numbers(lines, line, nr)
            rhor, line = _read_numbers(lines, line, nr)
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable funcfl file ({exc})") from None
        if species is not None and list(species) != [z]:
            raise ValueError(f"{path} is for Z={z}; species {list(species)} do not match")
        # LAMMPS (file2array) tabulates F on nrho+1 points, the last one repeating the
        # file's last value, over the same grid spacing; z2r = 27.2*0.529*Z*Z.
        frho = np.append(frho, frho[-1])
        z2r = LAMMPS_HARTREE_BOHR * zr * zr  # funcfl tabulates the effective charge Z(r)
        return cls(
            [z],
            frho[None],
            rhor[None],
            z2r[None, None],
            drho,
            dr,
            cutoff,
            style="eam",
            file=path,
            elements=[chemical_symbols[z]],
            **options,
        )

    def assemble(self, state: SimState, pairs: Pairs, compute_stress: bool = True) -> dict[str, torch.Tensor]:
        """Energies (eV), forces (eV/Å), stresses (eV/Å³): without a graph to keep in blocks with the
        splines' own derivatives (:func:`~chemfit_core.models.eam_blocks.assemble_tabulated`), else
        differentiably (:meth:`_EAMBase.assemble`). On a CPU the blocks are two compiled loops
        (:func:`~chemfit_core.models.eam_kernel.assemble_compiled`) unless ``compiled`` is False."""
        if tracks_graph(self, state):
            return super().assemble(state, pairs, compute_stress)
        if runs_compiled(self, state, graph=False):
            return assemble_compiled(self, state, pairs, compute_stress)
        return assemble_tabulated(self, state, pairs, compute_stress)

    def embedding_and_slope(self, rho, types, graph):
        """F(ρ) and F'(ρ) from the spline's own derivative (no autograd) unless a graph is kept."""
        if graph:
            return super().embedding_and_slope(rho, types, graph)
        table = 0 if len(self.species) == 1 else types
        value, slope = _spline(self.frho_spline, rho, self.drho, table, derivative=True)
        end_slope = self._end_slope(types)
        beyond = rho > self.rhomax
        value = value + end_slope * torch.clamp(rho - self.rhomax, min=0.0)
        return value, slope + torch.where(beyond, end_slope, torch.zeros_like(end_slope))

    def pair_and_dedr(self, r, ti, tj, fp_i, fp_j, graph):
        """φ and dE/dr from the splines' own derivatives (no autograd) unless a graph is kept."""
        if graph:
            return super().pair_and_dedr(r, ti, tj, fp_i, fp_j, graph)
        z2r, dz2r = _spline(self.z2r_spline, r, self.dr, ti * len(self.species) + tj, derivative=True)
        phi = z2r / r
        dedr = (dz2r - phi) / r
        _, drho_j = _spline(self.rhor_spline, r, self.dr, tj, derivative=True)
        if isinstance(ti, int):
            return phi, dedr + (fp_i + fp_j) * drho_j
        _, drho_i = _spline(self.rhor_spline, r, self.dr, ti, derivative=True)
        return phi, dedr + fp_i * drho_j + fp_j * drho_i

    def _end_slope(self, types):
        n = self.frho_spline.shape[1]
        last = self.frho_spline[:, n - 2]  # [n_species, 4]
        slope = (3 * last[:, 0] + 2 * last[:, 1] + last[:, 2]) / self.drho
        return slope[0] if len(self.species) == 1 else slope[types]

    def embedding(self, rho, types):
        value = _evaluate(self.frho_spline, rho, self.drho, types)
        # LAMMPS continues F linearly (with the slope at the end of its table) beyond rhomax
        beyond = torch.clamp(rho - self.rhomax, min=0.0)
        n = self.frho_spline.shape[1]
        slope = (
            3 * self.frho_spline[types, n - 2, 0]
            + 2 * self.frho_spline[types, n - 2, 1]
            + self.frho_spline[types, n - 2, 2]
        ) / self.drho
        return value + slope * beyond

    def density(self, r, tj):
        return _evaluate(self.rhor_spline, r, self.dr, tj)

    def pair(self, r, ti, tj):
        return _evaluate(self.z2r_spline, r, self.dr, ti * len(self.species) + tj) / r

    def lammps_commands(self, species: Sequence[str]) -> list[str]:
        """The same potential in LAMMPS input commands (the file it was read from)."""
        if self.file is None:
            raise ValueError("this EAM was not read from a file")
        if self.style == "eam":
            return ["pair_style eam", f"pair_coeff * * {self.file}"]
        return ["pair_style eam/alloy", f"pair_coeff * * {self.file} {' '.join(species)}"]


@register_model("eam/alloy")
def _build_setfl(spec: dict) -> EAM:
    return EAM.from_setfl(potential_file(spec.pop("file")), **spec)


@register_model("eam")
def _build_funcfl(spec: dict) -> EAM:
    return EAM.from_funcfl(potential_file(spec.pop("file")), **spec)
