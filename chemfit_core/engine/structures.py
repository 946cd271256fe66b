"""Structures from files and their geometry checks, for every stage that reads them.

:func:`read_structures` reads any ASE-readable file (extxyz first of all) and
reports every problem :func:`structure_problems` finds — unknown symbols, non-finite
positions, degenerate cells, overlapping atoms — as one error naming the file and
the structure. Units: Å.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_REPORTED_PROBLEMS", "MIN_DISTANCE_A", "read_structures", "structure_problems"]

MIN_DISTANCE_A = 0.5
"""Atoms closer than this (Å, periodic images included) overlap: no potential gives them finite forces."""

MAX_REPORTED_PROBLEMS = 20
"""Problems listed in one error at most (the rest are counted)."""


def structure_problems(atoms: Any) -> list[str]:
    """What is wrong with the geometry of one ``ase.Atoms``, whatever the element: each as
    ``expected ..., got ...``. Checked: known chemical symbols (no dummy ``X``), finite
    positions and cell, a cell vector of non-zero length along every periodic axis and
    periodic vectors that span a volume (or area), and no two atoms (or an atom and its
    periodic image) closer than :data:`MIN_DISTANCE_A`."""
    from ase.data import chemical_symbols
    from ase.neighborlist import neighbor_list

    out = []
    numbers = np.asarray(atoms.numbers)
    unknown = [k for k, z in enumerate(numbers) if not 0 < z < len(chemical_symbols)]
    if unknown:
        names = sorted({chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z) for z in numbers[unknown]})
        out.append(
            f"expected known chemical symbols, got unknown chemical symbol(s) {', '.join(map(repr, names))} "
            f"(atoms {', '.join(map(str, unknown[:5]))}{', ...' if len(unknown) > 5 else ''})"
        )
    positions, cell = np.asarray(atoms.positions, dtype=float), np.asarray(atoms.cell.array, dtype=float)
    if not np.isfinite(positions).all():
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        return [*out, f"expected finite positions, got {positions[bad[0]].tolist()} on atom {int(bad[0])}"]
    if not np.isfinite(cell).all():
        return [*out, f"expected a finite cell, got {cell.tolist()}"]
    periodic = [k for k in range(3) if atoms.pbc[k]]
    lengths = np.linalg.norm(cell, axis=1)
    flat = ["xyz"[k] for k in periodic if lengths[k] < 1e-6]
    if flat:
        return [*out, f"expected a cell vector along periodic axis {', '.join(flat)}, got length 0"]
    if len(periodic) >= 2:
        vectors = cell[periodic]
        spanned = np.sqrt(max(np.linalg.det(vectors @ vectors.T), 0.0)) / np.prod(lengths[periodic])
        if spanned < 1e-6:
            axes = ", ".join("xyz"[k] for k in periodic)
            return [*out, f"expected cell vectors along periodic axes {axes} that span a cell, got a singular cell"]
    if len(atoms) > 1 or periodic:
        i, j, d = neighbor_list("ijd", atoms, MIN_DISTANCE_A)
        if len(d):
            k = int(np.argmin(d))
            a, b = sorted((int(i[k]), int(j[k])))
            pair = f"atom {a} and its periodic image" if a == b else f"atoms {a} and {b}"
            out.append(
                f"expected atoms at least {MIN_DISTANCE_A} Å apart (periodic images included), "
                f"got {pair} {d[k]:.3f} Å apart"
            )
    return out


def read_structures(path: Path | str, index: str = ":", check: bool = True) -> list[Any]:
    """All structures of an extxyz (or any ASE-readable) file, with a clear error for a bad file.

    With ``check`` (the default) every structure must pass :func:`structure_problems`;
    each problem is reported as ``<path>, structure <index>: ...``, all in one
    :class:`~chemfit_core.errors.ChemFitError`. A file ase cannot read is reported with
    the index of the structure where reading stopped (an unknown chemical symbol, say).
    """
    from ase.io import iread

    from chemfit_core.errors import ChemFitError

    path = Path(path)
    if not path.is_file():
        raise ChemFitError(f"{path}: structure file not found")
    structures: list[Any] = []
    try:
        for atoms in iread(path, index=index):
            structures.append(atoms)
    except Exception as exc:
        what = str(exc)
        if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
            what = f"unknown chemical symbol {exc.args[0]!r}"  # ase's own message is the bare symbol
        raise ChemFitError(
            f"{path}, structure {len(structures)}: could not be read as a structure ({type(exc).__name__}: {what})"
        ) from exc
    if not structures:
        raise ChemFitError(f"{path}: holds no structures")
    if check:
        problems = [
            f"{path}, structure {k}: {problem}"
            for k, atoms in enumerate(structures)
            for problem in structure_problems(atoms)
        ]
        if problems:
            more = len(problems) - MAX_REPORTED_PROBLEMS
            listed = problems[:MAX_REPORTED_PROBLEMS] + ([f"{path}: ... and {more} more problems"] if more > 0 else [])
            raise ChemFitError(f"{path}: {len(problems)} problem(s) in its structures:\n  " + "\n  ".join(listed))
    return structures
