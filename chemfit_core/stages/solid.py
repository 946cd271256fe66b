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


def set_structures(fit_name: str, fit: Mapping[str, Any], set_name: str, nearest_neighbour_A: float,
                   master_seed: int) -> list[Any]:
    """The structures of one set, labelled with ``kind`` and ``label`` (a user set's
    structures take the set's name as their kind).

    Raises :class:`~chemfit_core.errors.ChemFitError` naming the file and the structure
    index for a user set that is missing, unreadable or empty, or has a structure that
    the config validation rejects (another element, overlapping atoms...).
    """
    from chemfit_core.engine.state import read_structures
    from chemfit_core.errors import ChemFitError
    from chemfit_core.stages.config import derived_seed, structure_problems

    solid, element = fit["solid"], fit["element"]
    if set_name == "prototypes":
        return prototype_structures(element, nearest_neighbour_A, solid["structures"])
    if set_name == "perturbed":
        return prototype_structures(element, nearest_neighbour_A, (), solid["perturbed_cells"], solid["rattle_A"],
                                    seed=derived_seed(master_seed, fit_name, "solid"))
    if set_name not in solid.get("sets", {}):
        raise ChemFitError(f"fits.{fit_name}.solid.sets: no structure set {set_name!r}; "
                           f"expected one of {solid_sets(fit)}")
    path = solid["sets"][set_name]["file"]
    structures = read_structures(path)
    problems = [f"{path}, structure {index}: {problem}" for index, atoms in enumerate(structures)
                for problem in structure_problems(atoms, element)]  # the config check's own test
    if problems:
        raise ChemFitError(f"fits.{fit_name}.solid.sets.{set_name}:\n  " + "\n  ".join(problems))
    for index, atoms in enumerate(structures):
        atoms.info.update({"kind": set_name, "label": f"{set_name}-{index}"})
    return structures


def prepare_set(fit_name: str, fit: Mapping[str, Any], master_seed: int, params_json: Path | str, set_name: str,
                out_path: Path | str) -> None:
    """Write one structure set of a fit's solid stage (extxyz), scaled to the fitted
    σ for the built-in sets (nearest neighbours at the pair minimum 2^(1/6) σ)."""
    import io

    from ase.io import write

    from chemfit_core.results import atomic_write_text, read_json
    from chemfit_core.stages.fit import fitted_model_spec

    spec = fitted_model_spec(read_json(params_json)[fit_name])
    structures = set_structures(fit_name, fit, set_name, 2 ** (1 / 6) * spec["sigma"], master_seed)
    buffer = io.StringIO()
    write(buffer, structures, format="extxyz")
    atomic_write_text(out_path, buffer.getvalue())


def analyse_sets(fit_name: str, fit: Mapping[str, Any], relaxed_paths: Sequence[Path | str],
                 out_csv: Path | str) -> pd.DataFrame:
    """Lattice constant, cohesive energy and energy differences of every relaxed set."""
    from chemfit_core.engine.state import read_structures
    from chemfit_core.results import write_csv

    relaxed = [atoms for path in relaxed_paths for atoms in read_structures(path)]
    table = solid_properties(relaxed, references=fit["solid"]["references"])
    table.insert(0, "fit", fit_name)
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
        atoms = bulk(element, kind, a=a, c=np.sqrt(8.0 / 3.0) * a if kind == "hcp" else None,
                     cubic=kind != "hcp")
        atoms.info.update({"kind": kind, "label": kind})
        structures.append(atoms)
    for k in range(perturbed_cells):
        atoms = bulk(element, "fcc", a=lattice["fcc"] * nearest_neighbour_A, cubic=True).repeat((2, 2, 2))
        atoms.rattle(stdev=rattle_A, seed=seed + k)
        atoms.info.update({"kind": "fcc-rattled", "label": f"fcc-rattled-{k}"})
        structures.append(atoms)
    return structures


def lattice_constant(atoms: Any) -> float:
    """Cubic lattice constant of an fcc/bcc cell (from the volume per atom), or hcp's a, Å."""
    kind = atoms.info.get("kind", "fcc").split("-")[0]
    volume_per_atom = atoms.get_volume() / len(atoms)
    if kind == "fcc":
        return float((4 * volume_per_atom) ** (1 / 3))
    if kind == "bcc":
        return float((2 * volume_per_atom) ** (1 / 3))
    if kind == "hcp":
        return float(atoms.cell.cellpar()[0])
    raise ValueError(f"no lattice constant for kind {kind!r}")


def solid_properties(
    relaxed: Sequence[Any],
    isolated_atom_energy_eV: float = 0.0,
    references: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per property of the relaxed prototypes: value, reference, error.

    Properties: ``lattice_constant_A`` and ``cohesive_energy_eV`` of fcc (rattled
    cells averaged), and ``E_<kind>-E_fcc_eV`` per atom for the other prototypes.
    ``references`` maps a property to ``{"value", "source"}``.
    """
    references = references or {}
    by_kind: dict[str, list[Any]] = {}
    for atoms in relaxed:
        by_kind.setdefault(atoms.info.get("kind", "fcc"), []).append(atoms)

    def per_atom(kind: str) -> float:
        return float(np.mean([a.get_potential_energy() / len(a) for a in by_kind[kind]]))

    rows = []
    if "fcc" in by_kind:
        rows.append(("lattice_constant_A", "Å", lattice_constant(by_kind["fcc"][0]), "fcc"))
        rows.append(("cohesive_energy_eV", "eV/atom", isolated_atom_energy_eV - per_atom("fcc"), "fcc"))
        for kind in by_kind:
            if kind not in ("fcc", "fcc-rattled"):
                rows.append((f"E_{kind}-E_fcc_eV", "eV/atom", per_atom(kind) - per_atom("fcc"), kind))
    if "fcc-rattled" in by_kind and "fcc" in by_kind:
        rows.append(("E_rattled-E_fcc_eV", "eV/atom", per_atom("fcc-rattled") - per_atom("fcc"), "fcc-rattled"))
    table = []
    for name, unit, value, kind in rows:
        ref = references.get(name, {})
        target = ref.get("value", np.nan)
        table.append({
            "property": name, "unit": unit, "structure": kind, "value": value, "reference": target,
            "error": value - target, "error_percent": 100 * (value / target - 1) if ref else np.nan,
            "source": ref.get("source", ""),
            "converged": all(a.info.get("relax_converged", True) for a in by_kind[kind]),
        })
    return pd.DataFrame(table)
