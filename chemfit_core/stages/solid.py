"""Crystal structures and their properties, computed with the batched relaxation engine.

The workflow relaxes a fitted model's structure sets — the crystal prototypes (fcc,
hcp, bcc), rattled fcc supercells and any sets the user names — each in its own
batched relax job, and reports lattice constants, cohesive energies and structural
energy differences next to experiment: properties the fit did not target, so a reader
sees what the model can and cannot do. Units: Å, eV per atom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROTOTYPES = ("fcc", "hcp", "bcc")
BUILTIN_SETS = ("prototypes", "perturbed")


def solid_sets(fit: Mapping[str, Any]) -> list[str]:
    """Names of the structure sets a fit's solid stage relaxes (one relax job each)."""
    solid = fit["solid"]
    sets = ["prototypes"] if solid["structures"] else []
    if solid["perturbed_cells"]:
        sets.append("perturbed")
    return sets + list(solid.get("sets", {}))


def set_structures(
    fit_name: str, fit: Mapping[str, Any], set_name: str, nearest_neighbour_A: float, master_seed: int
) -> list[Any]:
    """The structures of one set, labelled with ``kind`` and ``label`` (a user set's
    structures take the set's name as their kind).

    Raises :class:`~chemfit_core.errors.ChemFitError` naming the file and the structure
    index for a user set that is missing, unreadable or empty, or has a structure that
    the config validation rejects (another element, overlapping atoms...).
    """
    from chemfit_core.engine.structures import read_structures
    from chemfit_core.errors import ChemFitError
    from chemfit_core.stages.config import derived_seed, structure_problems

    solid, element = fit["solid"], fit["element"]
    if set_name == "prototypes":
        return prototype_structures(element, nearest_neighbour_A, solid["structures"])
    if set_name == "perturbed":
        return prototype_structures(
            element,
            nearest_neighbour_A,
            (),
            solid["perturbed_cells"],
            solid["rattle_A"],
            seed=derived_seed(master_seed, fit_name, "solid"),
        )
    if set_name not in solid.get("sets", {}):
        raise ChemFitError(
            f"fits.{fit_name}.solid.sets: no structure set {set_name!r}; expected one of {solid_sets(fit)}"
        )
    path = solid["sets"][set_name]["file"]
    structures = read_structures(path)
    problems = [
        f"{path}, structure {index}: {problem}"
        for index, atoms in enumerate(structures)
        for problem in structure_problems(atoms, element)
    ]  # the config check's own test
    if problems:
        raise ChemFitError(f"fits.{fit_name}.solid.sets.{set_name}:\n  " + "\n  ".join(problems))
    for index, atoms in enumerate(structures):
        atoms.info.update({"kind": set_name, "label": f"{set_name}-{index}"})
    return structures


def prepare_set(
    fit_name: str,
    fit: Mapping[str, Any],
    master_seed: int,
    params_json: Path | str,
    set_name: str,
    out_path: Path | str,
) -> None:
    """Write one structure set of a fit's solid stage (extxyz); the built-in sets start from
    the fitted form's nearest-neighbour distance (the pair minimum 2^(1/6) σ for lj/cut)."""
    import io

    from ase.io import write

    from chemfit_core.models.forms import fitted_form
    from chemfit_core.results import atomic_write_text, read_json

    form, params = fitted_form(read_json(params_json)[fit_name])
    structures = set_structures(fit_name, fit, set_name, form.nearest_neighbour_A(params), master_seed)
    buffer = io.StringIO()
    write(buffer, structures, format="extxyz")
    atomic_write_text(out_path, buffer.getvalue())


def analyse_sets(
    fit_name: str,
    fit: Mapping[str, Any],
    relaxed_paths: Sequence[Path | str],
    params_json: Path | str,
    out_csv: Path | str,
) -> pd.DataFrame:
    """Lattice constant, cohesive energy (against the fitted model's isolated atom) and energy
    differences of every relaxed set."""
    from chemfit_core.engine.structures import read_structures
    from chemfit_core.models.forms import fitted_form
    from chemfit_core.results import read_json, write_csv
    from chemfit_core.science.crystal import isolated_atom_energy

    form, params = fitted_form(read_json(params_json)[fit_name])
    relaxed = [atoms for path in relaxed_paths for atoms in read_structures(path)]
    table = solid_properties(
        relaxed, isolated_atom_energy(form.model(params), form.element), fit["solid"]["references"], fit_name
    )
    write_csv(out_csv, table)
    return table


def prototype_structures(
    element: str,
    nearest_neighbour_A: float,
    kinds: Sequence[str] = PROTOTYPES,
    perturbed_cells: int = 0,
    rattle_A: float = 0.05,
    seed: int = 0,
) -> list[Any]:
    """Crystal cells of ``element`` with nearest-neighbour distance ``nearest_neighbour_A``.

    One conventional cell per prototype (info ``kind``), plus ``perturbed_cells``
    rattled 2×2×2 fcc supercells (``kind = "fcc-rattled"``) with seeds derived from ``seed``.
    """
    from ase.build import bulk

    lattice = {"fcc": np.sqrt(2.0), "bcc": 2.0 / np.sqrt(3.0), "hcp": 1.0}
    structures = []
    for kind in kinds:
        if kind not in lattice:
            raise ValueError(f"unknown prototype {kind!r}; known: {', '.join(lattice)}")
        a = lattice[kind] * nearest_neighbour_A
        atoms = bulk(element, kind, a=a, c=np.sqrt(8.0 / 3.0) * a if kind == "hcp" else None, cubic=kind != "hcp")
        atoms.info.update({"kind": kind, "label": kind})
        structures.append(atoms)
    for k in range(perturbed_cells):
        atoms = bulk(element, "fcc", a=lattice["fcc"] * nearest_neighbour_A, cubic=True).repeat((2, 2, 2))
        atoms.rattle(stdev=rattle_A, seed=seed + k)
        atoms.info.update({"kind": "fcc-rattled", "label": f"fcc-rattled-{k}"})
        structures.append(atoms)
    return structures


def solid_properties(
    relaxed: Sequence[Any],
    isolated_atom_energy_eV: float,
    references: Mapping[str, Mapping[str, Any]] | None = None,
    fit_name: str = "",
) -> pd.DataFrame:
    """One row per property of the relaxed sets, in the columns of ``properties.csv``.

    ``a0_A`` and ``Ec_eV`` of the fcc prototype and ``E_<kind>_eV`` (eV/atom above fcc) of every
    other kind (prototypes, rattled cells, user sets), all from
    :func:`chemfit_core.science.crystal.structure_energies`, the in-fit crystal target's own
    implementation. ``references`` maps a property to ``{"value", "source"}``.
    """
    from chemfit_core.science.crystal import UNITS, structure_energies

    references = references or {}
    by_kind: dict[str, list[Any]] = {}
    for atoms in relaxed:
        by_kind.setdefault(atoms.info.get("kind", "fcc"), []).append(atoms)
    if "fcc" not in by_kind:
        raise ValueError("the solid stage needs the fcc prototype (solid.structures) as its reference state")
    others = {kind: cells for kind, cells in by_kind.items() if kind != "fcc"}
    values = structure_energies(by_kind["fcc"], others, "fcc", isolated_atom_energy_eV)
    rows = []
    for name, value in values.items():
        kind = "fcc" if name in ("a0_A", "Ec_eV") else name[2:-3]
        ref = references.get(name)
        target = ref["value"] if ref else np.nan
        rows.append(
            {
                "fit": fit_name,
                "state_point": "solid",
                "property": name,
                "unit": UNITS.get(name, "eV/atom"),
                "structure": kind,
                "fitted_to": False,
                "target": target,
                "fitted": value,
                "error": value - target,
                "error_percent": 100 * (value / target - 1) if ref else np.nan,
                "source": ref.get("source", "") if ref else "",
                "converged": all(a.info.get("relax_converged", True) for a in by_kind[kind]),
            }
        )
    return pd.DataFrame(rows)
