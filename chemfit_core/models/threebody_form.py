"""A fit of some entries of a LAMMPS three-body parameter file: the forms ``sw`` and ``tersoff``.

:class:`ThreeBodyForm` turns the fitted entries (named ``<column>:<A>-<B>-<C>``, units of the
file: eV, Å) into a :class:`~chemfit_core.models.threebody.ThreeBodyModel`, its parameter
tensors, and the parameter file LAMMPS runs; :func:`diamond_bond_length` gives the bond
length (Å) its crystal searches start from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from chemfit_core.models.base import Model
from chemfit_core.models.forms import PotentialForm
from chemfit_core.models.registry import potential_file
from chemfit_core.models.threebody import ThreeBodyModel
from chemfit_core.models.triplet_file import Triplet, tied_entries


def diamond_bond_length(model: Model, element: str, guess: float) -> float:
    """Nearest-neighbour distance (Å) of the lowest-energy diamond lattice of ``element``
    near ``guess``: a scan of ±30 %, a finer one around its minimum, then a parabola."""
    from ase.build import bulk

    from chemfit_core.engine.state import atoms_to_state

    centre, half_width = guess, 0.3 * guess
    for _ in range(2):
        distances = np.linspace(centre - half_width, centre + half_width, 41)
        cells = [bulk(element, "diamond", a=4 * d / np.sqrt(3), cubic=True) for d in distances]
        with torch.no_grad():
            out = model(atoms_to_state(cells, dtype=model.dtype), compute_stress=False)
        energies = out["energy"].double().numpy()
        k = int(np.clip(np.argmin(energies), 1, len(distances) - 2))
        centre, half_width = distances[k], 2 * (distances[1] - distances[0])
    e0, e1, e2 = energies[k - 1 : k + 2]
    curvature = e0 - 2 * e1 + e2
    h = distances[1] - distances[0]
    return float(centre + (0.5 * h * (e0 - e2) / curvature if curvature > 0 else 0.0))


@dataclasses.dataclass(frozen=True)
class ThreeBodyForm(PotentialForm):
    """A fit of some entries of a LAMMPS parameter file; the others stay as in the file.

    Options: ``file`` (a path, or the name of a file shipped with LAMMPS), ``species`` (the
    elements to read, in LAMMPS type order; default ``[]``: all of the file's, in order of
    first appearance) and ``fit``: what is fitted, each item a column (every entry of it the
    energy uses, e.g. ``epsilon``) or one entry (``epsilon:Si-Si-Si``). Parameters are named
    ``<column>:<A>-<B>-<C>`` (units of the file: eV, Å); entries a fit keeps equal
    (:class:`ColumnRules`) are one parameter, named by the first of them. LAMMPS runs the
    parameter file :meth:`lammps_commands` writes (``fitted.<suffix>``).
    """

    model_class: ClassVar[type[ThreeBodyModel]] = ThreeBodyModel
    option_help: ClassVar[Mapping[str, str]] = {
        "file": "a LAMMPS parameter file (a path or a file shipped with LAMMPS)"
    }

    def __post_init__(self) -> None:
        cls = self.model_class
        file = cls.read(potential_file(self.option("file")), list(self.option("species")) or None)
        if self.element not in file.elements:
            raise ValueError(f"{file.path} has no entries for {self.element}; it holds {file.elements}")
        items = self.option("fit")
        if isinstance(items, str) or not isinstance(items, Sequence) or not items:
            raise ValueError(f"{self.name}: fit must be a non-empty list of columns or entries, got {items!r}")
        n = len(file.elements)
        classes = {c: {tuple(m[0]): m for m in tied_entries(c, n, cls.rules)} for c in cls.columns}
        fitted: dict[str, tuple[int, list[Triplet]]] = {}
        for item in items:
            column, _, entry = str(item).partition(":")
            if column not in cls.columns:
                raise ValueError(f"{self.name}: fit names {item!r}; the columns are {', '.join(cls.columns)}")
            if column in cls.rules.fixed:
                raise ValueError(f"{self.name}: {column} cannot be fitted (it is not a smooth parameter)")
            chosen = list(classes[column].values())
            if entry:
                names = entry.split("-")
                if len(names) != 3 or not all(e in file.elements for e in names):
                    raise ValueError(f"{self.name}: fit names {item!r}; entries are A-B-C of {file.elements}")
                key = tuple(file.elements.index(e) for e in names)
                owner = [m for m in classes[column].values() if key in m]
                if not owner:
                    raise ValueError(
                        f"{self.name}: {column} of {entry} is never used by the energy: it cannot be fitted"
                    )
                if owner[0][0] != key:
                    raise ValueError(
                        f"{self.name}: {column}:{entry} must equal {column}:{file.name(owner[0][0])}: "
                        f"fit {column}:{file.name(owner[0][0])} (it sets both)"
                    )
                chosen = owner
            for members in chosen:
                fitted[f"{column}:{file.name(members[0])}"] = (cls.columns.index(column), members)
        object.__setattr__(self, "_file", file)
        object.__setattr__(self, "_fitted", fitted)

    @property
    def parameter_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self._fitted)

    def file_values(self) -> dict[str, float]:
        """The parameter file's values of the fitted parameters (the natural start of a fit)."""
        return {name: float(self._file.values[members[0]][c]) for name, (c, members) in self._fitted.items()}

    def model(self, params, dtype=torch.float64):
        self.check(params)
        values = self._file.values.copy()
        for name, (c, members) in self._fitted.items():
            for entry in members:
                values[entry][c] = float(params[name])
        same = np.array_equal(values, self._file.values)
        path = self._file.path.resolve() if same else None
        return self.model_class(self._file.elements, values, file=path).to(dtype)

    def model_tensors(self, params):
        tables = {}
        for c, column in enumerate(self.model_class.columns):
            entries = [(e, params[name]) for name, (k, members) in self._fitted.items() if k == c for e in members]
            if entries:
                value = torch.stack([v.reshape(()) for _, v in entries])
                index = tuple(torch.tensor([e[axis] for e, _ in entries]) for axis in range(3))
                base = torch.from_numpy(self._file.values[..., c].copy()).to(value.dtype)
                tables[column] = base.index_put(index, value)
        return tables

    def lammps_commands(self, params, workdir=None):
        if workdir is None:
            raise ValueError(f"{self.name} reaches LAMMPS through a parameter file: give the folder to write it to")
        model = self.model(params)
        model.write(Path(workdir).resolve() / f"fitted.{model.suffix}")
        return model.lammps_commands(model.elements)

    def nearest_neighbour_A(self, params):
        model = self.model(params)
        e = self._file.elements.index(self.element)
        return diamond_bond_length(model, self.element, model.bond_guess(e))
