"""Potential forms: the one path from a fit's named parameters (user units) to a model.

A fit names its parameters in the user's units (``epsilon_K``, ``sigma_A``, ``D_eV``...).
A :class:`PotentialForm` is the only place that knows what they mean. From a parameter
dict it gives

- :meth:`~PotentialForm.model`: the torch model (:mod:`chemfit_core.models`);
- :meth:`~PotentialForm.model_tensors`: the model's own tensors as differentiable
  functions of the fit's parameters (gradients with respect to the fit's parameters);
- :meth:`~PotentialForm.lammps_commands`: what LAMMPS runs for the same potential
  (``pair_style``/``pair_coeff`` lines, writing a potential file where the style needs one);
- :meth:`~PotentialForm.nearest_neighbour_A`: where a crystal of it starts from;
- :meth:`~PotentialForm.spec`: the options it uses, as ``params.json`` records them.

Every stage (liquid MD gradients, crystal and structure targets, the solid stage, the
LAMMPS round trip, ``chemfit relax --fit-params``) goes through these objects.

**A new potential is one module** in :mod:`chemfit_core.models`: its torch model, its
:func:`~chemfit_core.models.register_model` builder (for ``build_model`` and ``chemfit relax
--model``) and its form class decorated with :func:`register_form` — plus its test and the
form's name in the config schema's ``potential.form`` enum. Modules of the package are found
and imported on first use, so nothing else needs editing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

FORMS: dict[str, type[PotentialForm]] = {}
"""Every potential form a fit can name, by its config name (filled by :func:`register_form`)."""


def register_form(cls: type[PotentialForm]) -> type[PotentialForm]:
    """Class decorator: make ``cls`` the form of its ``name`` (config ``potential.form``)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name")
    if cls.name in FORMS and FORMS[cls.name] is not cls:
        raise ValueError(f"a potential form is already registered as {cls.name!r}")
    FORMS[cls.name] = cls
    return cls


def atomic_number(element: str) -> int:
    """Atomic number of a chemical symbol; an unknown symbol is an error that says so."""
    from ase.data import atomic_numbers

    if element not in atomic_numbers:
        raise ValueError(f"unknown chemical symbol {element!r}")
    return atomic_numbers[element]


@dataclasses.dataclass(frozen=True)
class PotentialForm:
    """Base: ``parameter_names`` are the fit's names; ``options`` the fixed settings.

    A form whose parameters depend on its options (one per species pair, or per term of an
    expression) defines ``parameter_names`` as a property, and checks its options in
    ``__post_init__`` (raising ValueError naming what is wrong): the config check makes the form
    and reports that error against ``potential``. Species-pair parameters are named
    ``<name>:<A>-<B>`` (``A_eV:Cu-O``; bare ``<name>`` with one species), triplets
    ``<name>:<A>-<B>-<C>``; pair forms get that naming, their tables and the checks from
    :class:`chemfit_core.models.species_pairs.SpeciesPairForm`.

    ``option_defaults`` lists every option the form uses with its default (``None``:
    required); :meth:`spec` records exactly those.
    """

    element: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    parameter_names: ClassVar[tuple[str, ...]] = ()
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    option_help: ClassVar[Mapping[str, str]] = {}
    """What a required option is, in words (for error messages)."""
    name: ClassVar[str] = ""

    def option(self, key: str) -> Any:
        """The value of option ``key`` (the form's default when not given)."""
        value = self.options.get(key, self.option_defaults[key])
        if value is None:
            raise ValueError(f"{self.name} needs the option {key!r}")
        return value

    def spec(self) -> dict[str, Any]:
        """``{"form", "element", <options the form uses>}``: what ``params.json`` records."""
        return {
            "form": self.name,
            "element": self.element,
            **{
                key: self.options.get(key, default)
                for key, default in self.option_defaults.items()
                if self.options.get(key, default) is not None
            },
        }

    @property
    def species(self) -> list[str]:
        """The chemical symbols in LAMMPS type order: the ``species`` option where the form has one,
        else the fit's element alone."""
        value = self.options.get("species") if "species" in self.option_defaults else None
        return [value] if isinstance(value, str) else list(value or [self.element])

    def check(self, params: Mapping[str, Any]) -> None:
        """Raise naming the parameters this form needs but ``params`` lacks, or does not know."""
        missing = [n for n in self.parameter_names if n not in params]
        unknown = [n for n in params if n not in self.parameter_names]
        if missing or unknown:
            raise ValueError(
                f"{self.name} needs parameters {list(self.parameter_names)}; missing {missing}, unknown {unknown}"
            )

    def model(self, params: Mapping[str, float], dtype: torch.dtype = torch.float64) -> Any:
        """The torch model at ``params`` (missing names are an error)."""
        raise NotImplementedError

    def model_tensors(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's parameter tensors as differentiable functions of the fit's."""
        raise NotImplementedError

    def lammps_commands(self, params: Mapping[str, float], workdir: Path | str | None = None) -> list[str]:
        """LAMMPS input lines for the same potential (types numbered as the model's species);
        a form that needs a potential file writes it into ``workdir``."""
        return self.model(params).lammps_commands([self.element])

    def nearest_neighbour_A(self, params: Mapping[str, float]) -> float:
        """A nearest-neighbour distance (Å) to build this form's crystals from before relaxing."""
        raise NotImplementedError


def all_forms() -> dict[str, type[PotentialForm]]:
    """Every registered form by name, after importing every potential module of the package."""
    from chemfit_core.models import load_all

    load_all()
    return dict(FORMS)


def form_class(name: str) -> type[PotentialForm]:
    """The form registered as ``name``; an unknown name is an error listing the known ones."""
    forms = FORMS if name in FORMS else all_forms()
    if name not in forms:
        raise ValueError(f"unknown potential form {name!r}; known: {', '.join(forms)}")
    return forms[name]


def potential_form(spec: Mapping[str, Any]) -> PotentialForm:
    """The form of a config's ``potential`` section (``form``, ``element`` and options)."""
    spec = dict(spec)
    name = spec.pop("form")
    element = spec.pop("element", "Ar")
    return form_class(name)(element=element, options=spec)


def fitted_form(summary: Mapping[str, Any]) -> tuple[PotentialForm, dict[str, float]]:
    """The form and the fitted parameters of one fit's ``params.json`` entry."""
    return potential_form(summary["potential"]), {name: e["value"] for name, e in summary["parameters"].items()}
