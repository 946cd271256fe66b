"""The registry of model builders behind :func:`chemfit_core.models.build_model`.

Each potential's module registers ``builder(spec) -> Model`` under its form name with
:func:`register_model`; ``build_model`` (and ``chemfit relax --model``) dispatch through it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

ModelBuilder = Callable[[dict[str, Any]], Any]
MODEL_BUILDERS: dict[str, ModelBuilder] = {}
"""``form name -> builder(spec)``, filled by :func:`register_model`."""


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: ``builder(spec) -> Model`` becomes the way :func:`build_model` makes form ``name``.

    ``spec`` is the description without ``form``, ``species`` already as atomic numbers.
    """

    def register(builder: ModelBuilder) -> ModelBuilder:
        if name in MODEL_BUILDERS and MODEL_BUILDERS[name] is not builder:
            raise ValueError(f"a model is already registered as {name!r}")
        MODEL_BUILDERS[name] = builder
        return builder

    return register


def potential_file(name: Path | str) -> Path:
    """A potential file: the path itself when it exists, else the file of that name shipped with LAMMPS."""
    from chemfit_core.external.lammps import potentials_dir

    path = Path(name)
    if not path.is_file() and (potentials_dir() / path).is_file():
        return potentials_dir() / path
    return path
