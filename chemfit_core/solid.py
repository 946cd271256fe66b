"""Crystal structures and their properties, computed with the batched relaxation engine.

The workflow relaxes a fitted model's crystal structures (fcc, hcp, bcc and
rattled supercells) in one batched run and reports lattice constants, cohesive
energies and structural energy differences next to experiment: properties the
fit did not target, so a reader sees what the model can and cannot do.
Units: Å, eV per atom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

PROTOTYPES = ("fcc", "hcp", "bcc")


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
