"""An atomic liquid of several elements: its species, their masses and the composition of the box.

The liquid template builds one lattice of type 1 atoms and turns fractions of them into the other
types (LAMMPS ``set type 1 type/ratio``); this module turns a fit's ``liquid.composition`` and
``masses_g_mol`` into the template's ``n_types``, ``masses`` and ``type_ratios`` (LAMMPS types in
the potential's ``species`` order) and checks them before any job. Masses in g/mol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "composition_problems",
    "composition_template_variables",
    "given_masses",
    "liquid_species",
    "species_masses",
]


def liquid_species(fit: Mapping[str, Any]) -> list[str]:
    """Chemical symbols in LAMMPS type order: the potential's ``species``, else the fit's element."""
    return list(fit["potential"].get("species") or [fit["element"]])


def given_masses(fit: Mapping[str, Any]) -> dict[str, float]:
    """Masses the config gives by chemical symbol, g/mol: ``masses_g_mol`` and the fit's element's
    ``mass_g_mol`` (LAMMPS runs and the written potential take ASE's standard masses for the rest)."""
    given = {k: float(v) for k, v in fit.get("masses_g_mol", {}).items()}
    if "mass_g_mol" in fit:
        given[fit["element"]] = float(fit["mass_g_mol"])
    return given


def species_masses(fit: Mapping[str, Any]) -> list[float]:
    """Mass of each species in type order, g/mol: :func:`given_masses`, else ASE's standard atomic mass."""
    from ase.data import atomic_masses, atomic_numbers

    given = given_masses(fit)
    return [given.get(s, float(atomic_masses[atomic_numbers[s]])) for s in liquid_species(fit)]


def _fractions(fit: Mapping[str, Any]) -> list[float]:
    """Mole fraction of each species in type order (the fit's element alone without a composition)."""
    species = liquid_species(fit)
    composition = fit["liquid"].get("composition")
    if not composition:
        return [1.0 if s == fit["element"] else 0.0 for s in species]
    total = sum(composition.values())
    if not total > 0:  # reported by composition_problems
        return [1.0 if s == fit["element"] else 0.0 for s in species]
    return [composition.get(s, 0.0) / total for s in species]


def composition_template_variables(fit: Mapping[str, Any]) -> dict[str, Any]:
    """``n_types``, ``masses`` (g/mol per type) and ``type_ratios``: ``[{"type": t, "ratio": r}]``
    in the order the template applies them, each the share of the atoms still of type 1 that become
    type ``t``, so that the box ends with the composition's mole fractions. Type 1 is the first
    species; without a composition, the fit's element fills the box."""
    fractions = _fractions(fit)
    ratios, remaining = [], 1.0  # the share of the box still of type 1
    for t, x in enumerate(fractions[1:], start=2):
        if x > 0:
            ratios.append({"type": t, "ratio": min(1.0, x / remaining)})
            remaining -= x
    if fractions[0] <= 0 and ratios:  # no type 1 at the end: the last conversion takes all that is left
        ratios[-1]["ratio"] = 1.0
    return {"n_types": len(fractions), "masses": species_masses(fit), "type_ratios": ratios}


def composition_problems(where: str, fit: Mapping[str, Any]) -> list[str]:
    """What is wrong with a fit's ``liquid.composition`` and ``masses_g_mol``, each naming the key."""
    species, problems = liquid_species(fit), []
    unknown = sorted(set(fit.get("masses_g_mol", {})) - set(species))
    if unknown:
        problems.append(f"{where}.masses_g_mol: expected species of the potential {species}, got {unknown}")
    if fit["element"] in fit.get("masses_g_mol", {}):
        problems.append(f"{where}.masses_g_mol: the fit's element {fit['element']} takes mass_g_mol; remove it here")
    composition = fit.get("liquid", {}).get("composition")
    if composition is None:
        return problems
    key = f"{where}.liquid.composition"
    unknown = sorted(set(composition) - set(species))
    if unknown:
        problems.append(f"{key}: expected species of the potential {species} (potential.species), got {unknown}")
    if not sum(composition.values()) > 0:
        problems.append(f"{key}: expected mole fractions with a sum > 0, got {dict(composition)}")
    if "molecule" in fit["liquid"]:
        problems.append(f"{key}: a molecular liquid's composition is its molecule file's; remove composition")
    return problems
