"""Structural and dynamic liquid targets: the radial distribution function and self-diffusion.

Both come from files the template's production run writes with LAMMPS's own computes, sampled
every ``every`` steps by ``fix ave/time`` (one row per sample, ``format " %.12g"``):

**RDF** (:class:`RdfTarget`): ``compute rdf`` (one pair of atom types, ``cutoff`` r_max) with
``fix ave/time ... c_rdf[*] file rdf.dat mode vector``. Each bin's g(r) is block-averaged over
the samples, with its standard error from ``n_blocks`` contiguous blocks; the reference curve (a
file of r/Å, g(r) and optionally a weight column) is interpolated linearly onto the bin centres.
The residuals are per bin, r_i = √(w_i/Σw) (g_i − g_ref,i)/d, so Σ r_i² is the weighted mean
square deviation over d² (one scalar target of denominator d weighs as much); bins outside the
reference's r range or below ``r_min_A`` are not fitted. The reported property ``rdf_rmsd`` is
the weighted RMS deviation √(Σ w_i (g_i − g_ref,i)²/Σw), dimensionless.

**Self-diffusion** (:func:`diffusion_coefficient`): ``compute msd com yes`` (the centre of mass's
drift removed; NPT: unwrapped with the current box, as LAMMPS does) with ``fix ave/time ...
v_time c_msd[4] file msd.dat``. Einstein's relation D = (1/6) dMSD/dt is fitted by least squares
on the second half of the production window (the first half holds the ballistic start); the
standard error is the scatter of the slopes of ``n_blocks`` contiguous pieces of that half (the
increments of a diffusive MSD over disjoint windows are uncorrelated). D in 1e-9 m²/s.

Neither target has a ∂A/∂θ the fluctuation formula can use (g(r) could, D is dynamic): with
gradients, both are differentiated by forward differences of runs at θ + h
(:func:`chemfit_core.science.observables.finite_difference_gradients`), which the log says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.errors import ChemFitError
from chemfit_core.units import A2_PER_PS_TO_1E9_M2_S

RDF_FILE = "rdf.dat"
"""The file the template's ``fix ave/time`` writes the RDF samples to."""
MSD_FILE = "msd.dat"
"""The file the template's ``fix ave/time`` writes the MSD samples (time in ps, MSD in Å²) to."""
STRUCTURE_UNITS = {"diffusion_1e9_m2_s": "1e-9 m²/s", "rdf_rmsd": ""}
"""The structural and dynamic properties a state point can report, with their units."""


def read_ave_time(path: Path | str) -> tuple[np.ndarray, list[np.ndarray]]:
    """(timesteps ``[n]``, rows) of a ``fix ave/time`` file: scalar mode gives one row per sample
    (``[n, k]`` stacked as one array in the list), vector mode one ``[bins, k]`` array per sample."""
    path = Path(path)
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip() and line[0] != "#"]
    except OSError as exc:
        raise ChemFitError(f"{path}: cannot read the fix ave/time output: {exc}") from exc
    if not lines:
        raise ChemFitError(f"{path}: no samples (the production run wrote none: is it longer than `every`?)")
    steps, blocks = [], []
    k = 0
    vector = len(lines[0]) == 2 and len(lines) > 1 and len(lines[1]) > 2
    if not vector:
        table = np.array(lines, dtype=float)
        return table[:, 0].astype(int), [table[:, 1:]]
    while k < len(lines):
        step, rows = int(lines[k][0]), int(lines[k][1])
        block = np.array(lines[k + 1 : k + 1 + rows], dtype=float)
        if block.shape[0] != rows:
            break  # a sample cut short: the run stopped while writing
        steps.append(step)
        blocks.append(block)
        k += 1 + rows
    return np.array(steps, dtype=int), blocks


def block_means(samples: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 of ``samples`` ``[n, ...]`` and its standard error from ``n_blocks`` block means."""
    x = np.asarray(samples, dtype=float)
    if len(x) < n_blocks or n_blocks < 2:
        raise ChemFitError(f"need at least {max(n_blocks, 2)} samples for block averaging, got {len(x)}")
    usable = len(x) - len(x) % n_blocks
    blocks = x[len(x) - usable :].reshape(n_blocks, -1, *x.shape[1:]).mean(axis=1)
    return x.mean(axis=0), blocks.std(axis=0, ddof=1) / math.sqrt(n_blocks)


def read_rdf(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timesteps ``[n]``, bin centres in Å ``[bins]``, g(r) ``[n, bins]``) of an ``rdf.dat``
    (``c_rdf[*]`` in mode vector: row, r, g, coordination number)."""
    steps, blocks = read_ave_time(path)
    if not blocks or blocks[0].ndim != 2 or blocks[0].shape[1] < 3:
        raise ChemFitError(f"{path}: expected `fix ave/time ... c_rdf[*] file {RDF_FILE} mode vector` output")
    return steps, blocks[0][:, 1], np.array([b[:, 2] for b in blocks])


def read_msd(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timesteps, time in ps, MSD in Å²) of an ``msd.dat`` (``v_time c_msd[4]`` in scalar mode)."""
    steps, (table,) = read_ave_time(path)
    if table.ndim != 2 or table.shape[1] != 2:
        raise ChemFitError(f"{path}: expected `fix ave/time ... v_<time> c_msd[4] file {MSD_FILE}` (two values)")
    return steps, table[:, 0], table[:, 1]


def diffusion_coefficient(time_ps: np.ndarray, msd_A2: np.ndarray, n_blocks: int = 5) -> tuple[float, float]:
    """D (1e-9 m²/s) from the least-squares slope of the MSD (Å²) over the second half of the time
    window (ps), /6, and its standard error from the slopes of ``n_blocks`` pieces of that half."""
    t, msd = np.asarray(time_ps, dtype=float), np.asarray(msd_A2, dtype=float)
    half = slice(len(t) // 2, None)
    t, msd = t[half], msd[half]
    if len(t) < 2 * n_blocks:
        raise ChemFitError(
            f"{len(t)} MSD samples in the second half of the production run are too few for {n_blocks} blocks "
            "(2 each): sample more often or run longer"
        )
    slope = np.polyfit(t, msd, 1)[0]
    pieces = [np.polyfit(a, b, 1)[0] for a, b in zip(np.array_split(t, n_blocks), np.array_split(msd, n_blocks))]
    scale = A2_PER_PS_TO_1E9_M2_S / 6.0
    return float(slope * scale), float(np.std(pieces, ddof=1) / math.sqrt(n_blocks) * scale)


def read_reference_rdf(path: Path | str) -> np.ndarray:
    """The reference curve ``[rows, 2 or 3]``: r in Å (increasing), g(r), optionally a weight per row;
    ``#`` comments and blank lines are skipped."""
    path = Path(path)
    try:
        table = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as exc:
        raise ChemFitError(f"{path}: cannot read the reference RDF (columns r/Å, g(r)[, weight]): {exc}") from exc
    if table.shape[1] not in (2, 3) or len(table) < 2:
        raise ChemFitError(f"{path}: expected ≥ 2 rows of 2 or 3 columns (r/Å, g(r)[, weight]), got {table.shape}")
    if np.any(np.diff(table[:, 0]) <= 0):
        raise ChemFitError(f"{path}: expected r (first column) strictly increasing")
    return table


def weight_function(expression: str) -> Any:
    """A per-bin weight w(r), r in Å, from ``uniform``, ``column`` (the reference file's third column,
    handled by :class:`RdfTarget`) or a sympy expression in ``r`` (``exp(-r/5)``, ``r**2``)."""
    import sympy

    if expression == "uniform":
        return lambda r: np.ones_like(r)
    r = sympy.Symbol("r")
    try:
        parsed = sympy.sympify(expression, locals={"r": r})
    except (sympy.SympifyError, TypeError, SyntaxError) as exc:
        raise ValueError(f"weights: expected uniform, column or an expression in r, got {expression!r}") from exc
    if parsed.free_symbols - {r}:
        raise ValueError(f"weights: {expression!r} uses {sorted(map(str, parsed.free_symbols - {r}))}; only r (Å)")
    function = sympy.lambdify(r, parsed, "numpy")
    return lambda x: np.broadcast_to(np.asarray(function(x), dtype=float), np.shape(x)).copy()


@dataclass(frozen=True)
class RdfTarget:
    """A g(r) target: ``reference`` ``[rows, 2|3]`` (r/Å, g, weight), ``n_bins`` bins up to
    ``r_max_A`` of the atom types ``types`` ("" all pairs, else "i j"), fitted from ``r_min_A`` with
    per-bin ``weights`` (see :func:`weight_function`) and residual scale ``denominator``."""

    reference: np.ndarray = field(repr=False)
    r_max_A: float
    n_bins: int
    denominator: float
    types: str = ""
    weights: str = "uniform"
    r_min_A: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.n_bins < 2 or not self.r_max_A > 0 or not self.denominator > 0:
            raise ValueError(
                f"rdf: expected n_bins ≥ 2, r_max_A > 0, denominator > 0, got {self.n_bins}, {self.r_max_A}, "
                f"{self.denominator}"
            )
        if self.weights == "column" and self.reference.shape[1] < 3:
            raise ValueError("rdf.weights: column needs a third column (the weights) in the reference file")
        if not self.fitted.any():
            raise ValueError(
                f"rdf: no bin centre between r_min_A={self.r_min_A} and r_max_A={self.r_max_A} lies within the "
                f"reference's r range [{self.reference[0, 0]}, {self.reference[-1, 0]}] Å"
            )
        w = self._raw_weights()
        if np.any(~np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
            raise ValueError(f"rdf.weights: expected finite weights ≥ 0, not all 0, on the bins, got {w}")

    @property
    def centres(self) -> np.ndarray:
        """Bin centres, Å (LAMMPS's: (k + 1/2) r_max / n_bins)."""
        return (np.arange(self.n_bins) + 0.5) * self.r_max_A / self.n_bins

    @property
    def fitted(self) -> np.ndarray:
        """Mask of the fitted bins: within the reference's r range and from ``r_min_A``."""
        r = self.centres
        return (r >= max(self.reference[0, 0], self.r_min_A)) & (r <= self.reference[-1, 0])

    @property
    def reference_g(self) -> np.ndarray:
        """The reference interpolated onto the fitted bins."""
        return np.interp(self.centres[self.fitted], self.reference[:, 0], self.reference[:, 1])

    def _raw_weights(self) -> np.ndarray:
        r = self.centres[self.fitted]
        if self.weights == "column":
            return np.interp(r, self.reference[:, 0], self.reference[:, 2])
        return weight_function(self.weights)(r)

    @property
    def bin_weights(self) -> np.ndarray:
        """The fitted bins' weights, normalised to sum 1."""
        w = self._raw_weights()
        return w / w.sum()

    def template_variable(self, every: int) -> dict[str, Any]:
        """The template's ``rdf``: ``n_bins``, ``r_max_A``, ``pairs`` ("" or "i j"), ``every`` (steps
        between samples) and ``file``."""
        return {"n_bins": self.n_bins, "r_max_A": self.r_max_A, "pairs": self.types, "every": every, "file": RDF_FILE}

    def check_bins(self, centres: np.ndarray, where: str) -> None:
        """Raise :class:`ChemFitError` when a run's bins are not this target's."""
        if len(centres) != self.n_bins or not np.allclose(centres, self.centres, rtol=1e-6, atol=1e-9):
            raise ChemFitError(
                f"{where}: the run's RDF has {len(centres)} bins up to {centres[-1]:.4g} Å; expected {self.n_bins} "
                f"up to {self.r_max_A} Å (the template's compute rdf is not the one the rdf variable asks for)"
            )

    def residuals(self, g: np.ndarray) -> list[float]:
        """√(w_i) (g_i − g_ref,i)/d over the fitted bins, from all bins' g ``[n_bins]``."""
        return list(np.sqrt(self.bin_weights) * (np.asarray(g)[self.fitted] - self.reference_g) / self.denominator)

    def jacobian_rows(self, dg: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
        """d residual_i/dθ per parameter from dg/dθ ``{name: [n_bins]}``."""
        scale = np.sqrt(self.bin_weights) / self.denominator
        return {name: list(scale * np.asarray(d)[self.fitted]) for name, d in dg.items()}

    def rmsd(self, g: np.ndarray, g_sem: np.ndarray) -> tuple[float, float]:
        """The weighted RMS deviation from the reference and its standard error (propagated per bin)."""
        d = np.asarray(g)[self.fitted] - self.reference_g
        w = self.bin_weights
        value = float(np.sqrt(np.sum(w * d * d)))
        error = float(np.sqrt(np.sum((w * d * np.asarray(g_sem)[self.fitted]) ** 2)) / value) if value else 0.0
        return value, error


def structure_properties(
    folder: Path | str, rdf: RdfTarget | None, diffusion: bool, n_blocks: int = 5, where: str = "run"
) -> dict[str, Any]:
    """From the production run's files in ``folder``: ``rdf_g``/``rdf_g_sem`` (per bin) with ``rdf_rmsd``
    (and ``_sem``) for an RDF target, ``diffusion_1e9_m2_s`` (and ``_sem``) when asked for."""
    folder = Path(folder)
    out: dict[str, Any] = {}
    if rdf is not None:
        _, centres, samples = read_rdf(folder / RDF_FILE)
        rdf.check_bins(centres, where)
        g, g_sem = block_means(samples, n_blocks)
        out["rdf_g"], out["rdf_g_sem"] = g, g_sem
        out["rdf_rmsd"], out["rdf_rmsd_sem"] = rdf.rmsd(g, g_sem)
    if diffusion:
        _, time_ps, msd = read_msd(folder / MSD_FILE)
        out["diffusion_1e9_m2_s"], out["diffusion_1e9_m2_s_sem"] = diffusion_coefficient(time_ps, msd, n_blocks)
    return out


def structure_files(rdf: RdfTarget | None, diffusion: bool) -> Sequence[str]:
    """The files a run with these targets writes beside its log (the run cache keeps them)."""
    return [name for name, wanted in ((RDF_FILE, rdf is not None), (MSD_FILE, diffusion)) if wanted]
