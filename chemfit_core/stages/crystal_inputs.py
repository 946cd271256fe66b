"""A fit's crystal targets from its config: the ``crystal`` section and the named ``crystals``.

A fit may fit several crystals together (a compound and its elements, say): ``crystals`` maps a
name to a section of the same shape as ``crystal``, and each becomes one objective term named
``crystal:<name>``. The single ``crystal`` section keeps its term name ``crystal``, so results
written before ``crystals`` existed read the same. Every stage that reads the crystals goes
through :func:`crystal_entries`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chemfit_core.models.forms import PotentialForm
    from chemfit_core.science.crystal import CrystalSetup
    from chemfit_core.science.targets import CrystalTarget

LEGACY = "crystal"
"""The single crystal section's key, and the name of its term."""
PREFIX = "crystal:"
"""Term names of the ``crystals`` entries: ``crystal:<name>``."""


@dataclass(frozen=True)
class CrystalEntry:
    """One crystal target of a fit: its term name (``crystal`` or ``crystal:<name>``), its config
    key below the fit (``crystal`` or ``crystals.<name>``) and its validated section."""

    term: str
    key: str
    section: Mapping[str, Any]

    @property
    def label(self) -> str:
        """The name a report shows: ``crystal``, or the ``crystals`` entry's own name."""
        return crystal_label(self.term)


def crystal_entries(fit: Mapping[str, Any]) -> list[CrystalEntry]:
    """A fit's crystal targets in config order: ``crystal`` first, then each ``crystals`` entry."""
    entries = [CrystalEntry(LEGACY, LEGACY, fit[LEGACY])] if LEGACY in fit else []
    entries += [CrystalEntry(f"{PREFIX}{name}", f"crystals.{name}", s) for name, s in fit.get("crystals", {}).items()]
    return entries


def has_crystals(fit: Mapping[str, Any]) -> bool:
    """Whether a fit's config has any crystal target."""
    return bool(crystal_entries(fit))


def is_crystal_term(name: Any) -> bool:
    """Whether a term (or a properties.csv state point) is a crystal target's."""
    return isinstance(name, str) and (name == LEGACY or name.startswith(PREFIX))


def crystal_label(term: str) -> str:
    """``crystal`` → ``crystal``; ``crystal:B2`` → ``B2``."""
    return term.removeprefix(PREFIX)


def crystal_setup(element: str, crystal: Mapping[str, Any]) -> CrystalSetup:
    """The :class:`CrystalSetup` of one crystal section; ``element`` is the crystal's formula."""
    from chemfit_core.science.crystal import CrystalSetup

    return CrystalSetup(
        element,
        lattice=crystal["lattice"],
        a_guess_A=crystal["a_guess_A"],
        strain=crystal["strain"],
        vacancy_cells=crystal["vacancy_cells"],
        slab_layers=crystal["slab_layers"],
        fmax=crystal["fmax"],
        c_over_a=crystal.get("c_over_a"),
        structure_file=crystal.get("structure_file"),
        element_references={k: (v["lattice"], v["a_guess_A"]) for k, v in crystal["element_references"].items()},
    )


def entry_setup(fit: Mapping[str, Any], entry: CrystalEntry) -> CrystalSetup:
    """The :class:`CrystalSetup` of a crystal entry (its ``formula``, by default the fit's element)."""
    return crystal_setup(entry.section.get("formula", fit["element"]), entry.section)


def crystal_targets(fit: Mapping[str, Any], form: PotentialForm) -> list[tuple[str, CrystalTarget, float]]:
    """(term name, target, weight) of every crystal of a fit, the properties' units those of
    :data:`chemfit_core.science.crystal.UNITS` (Å, eV/atom, GPa, J/m²)."""
    from chemfit_core.science.liquid import Reference
    from chemfit_core.science.targets import CrystalTarget

    out = []
    for entry in crystal_entries(fit):
        section = entry.section
        references = {
            k: Reference(r["value"], r["denominator"], r.get("source", "")) for k, r in section["references"].items()
        }
        target = CrystalTarget(form, entry_setup(fit, entry), references, section.get("validate", []))
        out.append((entry.term, target, section["weight"]))
    return out


def crystal_name_problems(where: str, fit: Mapping[str, Any]) -> list[str]:
    """The ``crystal`` section and a ``crystals`` entry of the same name: two targets, one name."""
    if LEGACY in fit and LEGACY in fit.get("crystals", {}):
        return [
            f"{where}.crystals.{LEGACY}: expected a name other than {LEGACY!r} next to the fit's own "
            f"{LEGACY!r} section, which is the crystal of that name (give one of them only, or rename this entry)"
        ]
    return []
