"""LAMMPS's per-element-triplet parameter files (``sw``, ``tersoff``), and which of their entries a fit sets.

- :func:`read_triplet_file` reads them as LAMMPS's ``PotentialFileReader`` does (``#``
  comments, an entry may span lines, only entries whose three elements are all modelled are
  kept; a duplicate or missing entry and an illegal value are errors naming the file and the
  line), :func:`write_triplet_file` writes them back (every value exactly, as ``repr`` of the float).
- :class:`ColumnRules` and :func:`tied_entries`: which entries of a column the energy
  uses and which a fit keeps equal (LAMMPS picks one of them by atom IDs or neighbour
  order), i.e. which entries are fitted independently.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

Triplet = tuple[int, int, int]
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # what LAMMPS reads as a number


@dataclasses.dataclass(frozen=True)
class ColumnRules:
    """Which entries of each column matter, and which a fit keeps equal.

    ``pair_only``: columns used from i-j-j entries only (two-body and bond parameters);
    ``swap_ij``: columns whose i-j-j and j-i-i entries are one fitted value (LAMMPS evaluates
    a pair term from one end, chosen by atom IDs: the models do the same, and a fit keeps
    the result independent of them); ``swap_jk``: columns whose i-j-k and i-k-j entries are
    one fitted value (LAMMPS takes j, k in neighbour-list order); ``fixed``: columns that
    cannot be fitted (integers, cutoff shortcuts).
    """

    pair_only: frozenset[str] = frozenset()
    swap_ij: frozenset[str] = frozenset()
    swap_jk: frozenset[str] = frozenset()
    fixed: frozenset[str] = frozenset()


def tied_entries(column: str, n: int, rules: ColumnRules) -> list[list[Triplet]]:
    """Classes of entries of ``column`` that the energy uses, each class one free value.

    Each class is sorted; its first entry names it. Entries the energy never reads
    (a pair-only column of an i-j-k entry with j ≠ k) are in no class.
    """
    seen: set[Triplet] = set()
    classes = []
    for entry in np.ndindex(n, n, n):
        i, j, k = entry
        if entry in seen or (column in rules.pair_only and j != k):
            continue
        members, todo = {entry}, [entry]
        while todo:
            a, b, c = todo.pop()
            partners = []
            if column in rules.swap_ij and b == c:
                partners.append((b, a, a))
            if column in rules.swap_jk:
                partners.append((a, c, b))
            for p in partners:
                if p not in members:
                    members.add(p)
                    todo.append(p)
        seen |= members
        classes.append(sorted(members))
    return classes


@dataclasses.dataclass
class TripletFile:
    """Entries of a parameter file for ``elements`` (in that order): ``values[i, j, k]`` holds
    the columns of entry i-j-k, ``lines[(i, j, k)]`` the line it starts on."""

    path: Path
    elements: list[str]
    columns: tuple[str, ...]
    values: np.ndarray  # [n, n, n, n_columns] float64
    lines: dict[Triplet, int]

    def name(self, entry: Triplet) -> str:
        """``A-B-C``: the entry's elements."""
        return "-".join(self.elements[t] for t in entry)


def read_triplet_file(
    path: Path | str,
    columns: Sequence[str],
    style: str,
    elements: Sequence[str] | None = None,
    check: Callable[[dict[str, float]], str | None] | None = None,
) -> TripletFile:
    """Read a LAMMPS parameter file of ``style`` (``sw``, ``tersoff``): three element names
    and ``len(columns)`` numbers per entry.

    ``elements``: the elements to keep (LAMMPS's ``pair_coeff * * file A B``), default all
    of the file's in order of first appearance. ``check(values)`` returns why an entry is
    illegal (LAMMPS's own test), or None. Errors name the file and the line.
    """
    from ase.data import atomic_numbers

    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the {style} parameter file ({exc})") from None
    width = 3 + len(columns)
    raw: list[tuple[int, list[str]]] = []
    number = 0
    while number < len(lines):
        words = lines[number].split("#", 1)[0].split()
        number += 1
        if not words:
            continue
        start = number
        while len(words) < width:
            if number >= len(lines):
                raise ValueError(
                    f"{path}:{start}: the entry starting here has {len(words)} of {width} words "
                    f"(three elements, then {', '.join(columns)}) when the file ends"
                )
            words += lines[number].split("#", 1)[0].split()
            number += 1
        raw.append((start, words))
    if elements is None:
        elements = list(dict.fromkeys(w for _, words in raw for w in words[:3]))
    elements = list(elements)
    for start, words in raw:
        for element in words[:3]:
            if element in elements and element not in atomic_numbers:
                raise ValueError(
                    f"{path}:{start}: {element!r} is not a chemical symbol (name the elements to read, "
                    "as the species of the model)"
                )
    n = len(elements)
    values = np.zeros((n, n, n, len(columns)))
    found: dict[Triplet, int] = {}
    for start, words in raw:
        if not all(w in elements for w in words[:3]):
            continue  # as LAMMPS: entries of other elements are skipped
        entry, name = tuple(elements.index(w) for w in words[:3]), "-".join(words[:3])
        if entry in found:
            raise ValueError(f"{path}:{start}: a second entry for {name} (the first is on line {found[entry]})")
        row = {}
        for column, word in zip(columns, words[3:]):
            if not _NUMBER.match(word):
                raise ValueError(f"{path}:{start}: {column} of {name} is {word!r}, not a number")
            row[column] = float(word)
        if len(words) > width:  # LAMMPS ignores what follows; it is more likely a mistake
            raise ValueError(
                f"{path}:{start}: {len(words)} words where a {style} entry has {width} "
                f"(three elements, then {', '.join(columns)})"
            )
        problem = check(row) if check else None
        if problem:
            raise ValueError(f"{path}:{start}: illegal {style} parameters for {name}: {problem}")
        values[entry] = [row[c] for c in columns]
        found[entry] = start
    missing = [e for e in np.ndindex(n, n, n) if e not in found]
    if missing:
        names = ", ".join("-".join(elements[t] for t in e) for e in missing)
        raise ValueError(f"{path}: no entry for {names} (a {style} file needs one per triplet of {elements})")
    return TripletFile(path, elements, tuple(columns), values, found)


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def write_triplet_file(path: Path | str, elements: Sequence[str], values: np.ndarray, header: Sequence[str]) -> Path:
    """Write every entry i-j-k of ``values`` ``[n, n, n, n_columns]`` (two lines each, exact
    values); ``header`` lines become ``#`` comments after LAMMPS's ``UNITS: metal`` tag."""
    path = Path(path)
    split = (values.shape[-1] + 1) // 2
    out = ["# UNITS: metal CONTRIBUTOR: chemfit_core", *(f"# {line}" for line in header), ""]
    n = len(elements)
    for entry in np.ndindex(n, n, n):
        row = [_number(v) for v in values[entry]]
        out.append(" ".join(elements[t] for t in entry) + "  " + " ".join(row[:split]))
        out.append("    " + " ".join(row[split:]))
    path.write_text("\n".join(out) + "\n")
    return path
