"""Interatomic potentials in torch with one contract.

Every model maps a batched :class:`~chemfit_core.engine.state.SimState` to::

    {"energy": [n_systems] eV, "forces": [n_atoms, 3] eV/Å, "stress": [n_systems, 3, 3] eV/Å³}

in the precision and on the device of the state. Parameters are torch tensors
(``nn.Parameter``), so gradients of energies, forces and stresses with respect
to them come from autograd. Stress follows ASE's sign (positive under tension):
σ = (1/V) ∂E/∂ε.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chemfit_core.models.base import Model, PairModel
from chemfit_core.models.pair import LennardJones, Morse

__all__ = ["FORMS", "LennardJones", "Model", "Morse", "PairModel", "build_model"]

FORMS = ("lj/cut", "morse", "eam/alloy", "eam", "eam/analytic")
"""Model forms :func:`build_model` knows (LAMMPS pair-style names where one exists)."""


def _atomic_numbers(species: Any) -> list[int]:
    from ase.data import atomic_numbers

    items = [species] if isinstance(species, (str, int)) else list(species)
    out = []
    for item in items:
        if isinstance(item, int):
            out.append(item)
        elif item in atomic_numbers:
            out.append(atomic_numbers[item])
        else:
            raise ValueError(f"unknown element {item!r}")
    return out


def build_model(spec: Mapping[str, Any]) -> Model:
    """A model from a plain description, as config files and the CLI give it.

    ``{"form": "lj/cut", "epsilon": 0.0104, "sigma": 3.40, "cutoff": 8.5, "species": ["Ar"]}``,
    ``{"form": "morse", "D": ..., "alpha": ..., "r0": ..., "cutoff": ...}``,
    ``{"form": "eam/alloy", "file": "Cu_mishin1.eam.alloy"}`` (a path, or a file shipped
    with LAMMPS), ``{"form": "eam", "file": "Cu_u3.eam"}``, ``{"form": "eam/analytic", ...}``.
    Energies in eV, lengths in Å.
    """
    spec = dict(spec)
    form = spec.pop("form", None)
    options = {k: spec.pop(k) for k in ("shift", "skin") if k in spec}
    if "species" in spec:
        spec["species"] = _atomic_numbers(spec["species"])
    try:
        if form == "lj/cut":
            return LennardJones(spec.pop("epsilon"), spec.pop("sigma"), spec.pop("cutoff"), **spec, **options)
        if form == "morse":
            return Morse(spec.pop("D"), spec.pop("alpha"), spec.pop("r0"), spec.pop("cutoff"), **spec, **options)
        if form in ("eam/alloy", "eam"):
            from pathlib import Path

            from chemfit_core.external.lammps import potentials_dir
            from chemfit_core.models.eam import EAM

            path = Path(spec.pop("file"))
            if not path.is_file() and (potentials_dir() / path).is_file():
                path = potentials_dir() / path
            reader = EAM.from_setfl if form == "eam/alloy" else EAM.from_funcfl
            return reader(path, **spec, **options)
        if form == "eam/analytic":
            from chemfit_core.models.eam import AnalyticEAM

            return AnalyticEAM(**spec, **options)
    except KeyError as exc:
        raise ValueError(f"model {form!r} needs the parameter {exc.args[0]!r}") from None
    except TypeError as exc:
        raise ValueError(f"model {form!r}: {exc}") from None
    raise ValueError(f"unknown model form {form!r}; known: {', '.join(FORMS)}")


def __getattr__(name: str):
    if name in ("EAM", "AnalyticEAM"):
        from chemfit_core.models import eam

        return getattr(eam, name)
    raise AttributeError(name)
