"""Interatomic potentials in torch with one contract, and the forms that fits name them by.

Every model maps a batched :class:`~chemfit_core.engine.state.SimState` to::

    {"energy": [n_systems] eV, "forces": [n_atoms, 3] eV/Å, "stress": [n_systems, 3, 3] eV/Å³}

in the precision and on the device of the state. Parameters are torch tensors
(``nn.Parameter``), so gradients of energies, forces and stresses with respect
to them come from autograd. Stress follows ASE's sign (positive under tension):
σ = (1/V) ∂E/∂ε.

Each potential's module holds its model, its :func:`register_model` builder and its
:class:`~chemfit_core.models.forms.PotentialForm` (a fit's parameters in user units): adding a
potential is adding one module here (see :mod:`chemfit_core.models.forms`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from chemfit_core.models.base import Model, PairModel
from chemfit_core.models.pair import LennardJones, Morse
from chemfit_core.models.registry import MODEL_BUILDERS, register_model

__all__ = ["MODEL_BUILDERS", "LennardJones", "Model", "Morse", "PairModel", "build_model", "load_all", "register_model"]

_INFRASTRUCTURE = {"base", "forms", "registry"}


def load_all() -> None:
    """Import every potential module of this package, so each registers its model and form."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{module.name}")


def _atomic_numbers(species: Any) -> list[int]:
    from chemfit_core.models.forms import atomic_number

    items = [species] if isinstance(species, (str, int)) else list(species)
    return [item if isinstance(item, int) else atomic_number(item) for item in items]


def build_model(spec: Mapping[str, Any]) -> Model:
    """A model from a plain description, as config files and the CLI give it.

    ``{"form": "lj/cut", "epsilon": 0.0104, "sigma": 3.40, "cutoff": 8.5, "species": ["Ar"]}``,
    ``{"form": "morse", "D": ..., "alpha": ..., "r0": ..., "cutoff": ...}``,
    ``{"form": "eam/alloy", "file": "Cu_mishin1.eam.alloy"}`` (a path, or a file shipped
    with LAMMPS), ``{"form": "eam", "file": "Cu_u3.eam"}``, ``{"form": "eam/analytic", ...}``,
    and every other registered form. Energies in eV, lengths in Å.
    """
    spec = dict(spec)
    form = spec.pop("form", None)
    if form not in MODEL_BUILDERS:
        load_all()
    if form not in MODEL_BUILDERS:
        raise ValueError(f"unknown model form {form!r}; known: {', '.join(MODEL_BUILDERS)}")
    if "species" in spec:
        spec["species"] = _atomic_numbers(spec["species"])
    try:
        return MODEL_BUILDERS[form](spec)
    except KeyError as exc:
        raise ValueError(f"model {form!r} needs the parameter {exc.args[0]!r}") from None
    except TypeError as exc:
        raise ValueError(f"model {form!r}: {exc}") from None


def __getattr__(name: str):
    if name == "EAM":
        from chemfit_core.models.eam import EAM

        return EAM
    if name == "AnalyticEAM":
        from chemfit_core.models.analytic_eam import AnalyticEAM

        return AnalyticEAM
    raise AttributeError(name)
