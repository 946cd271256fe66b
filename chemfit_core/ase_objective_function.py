"""Quantities from any ASE calculator (EMT, LAMMPSlib, a machine-learned potential), at ChemFit's path.

:class:`SinglePointASEComputer` builds the structure once (``atoms_factory``, then an
optional ``atoms_post_processor``), and for every evaluation works on a copy of it with
a fresh calculator (``calc_factory``) to which the parameters are applied
(``param_applier``); ``quantity_processors`` turn the finished calculation into the
quantity dict. :class:`MinimizationASEComputer` relaxes the copy (ASE's BFGS) first.
Evaluations may run concurrently: the base structure is built exactly once, under a lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ase import Atoms
from ase.calculators.calculator import Calculator

from chemfit_core.abstract_objective_function import EvaluateContext, Parameters, QuantityComputer

__all__ = [
    "AtomsFactory",
    "AtomsPostProcessor",
    "CalculatorFactory",
    "DefaultQuantityProcessor",
    "MinimizationASEComputer",
    "ParameterApplier",
    "PathAtomsFactory",
    "QuantityProcessor",
    "SinglePointASEComputer",
]


@runtime_checkable
class CalculatorFactory(Protocol):
    """``factory(atoms)`` attaches a new calculator to ``atoms.calc``."""

    def __call__(self, atoms: Atoms) -> None: ...


@runtime_checkable
class ParameterApplier(Protocol):
    """``applier(atoms, params)`` sets the fitted parameters on ``atoms.calc``."""

    def __call__(self, atoms: Atoms, params: dict[str, Any]) -> None: ...


@runtime_checkable
class AtomsPostProcessor(Protocol):
    """``processor(atoms)`` modifies the base structure in place, once."""

    def __call__(self, atoms: Atoms) -> None: ...


@runtime_checkable
class AtomsFactory(Protocol):
    """``factory()`` returns the base structure."""

    def __call__(self) -> Atoms: ...


@runtime_checkable
class QuantityProcessor(Protocol):
    """``processor(calc, atoms) -> quantities`` after the calculation."""

    def __call__(self, calc: Calculator, atoms: Atoms) -> dict[str, Any]: ...


def _check(obj: Any, protocol: type, what: str, optional: bool = False) -> None:
    if (obj is not None or not optional) and not isinstance(obj, protocol):
        raise TypeError(f"{what} must be callable as {protocol.__name__} describes, got {obj!r}")


class PathAtomsFactory:
    """Reads one structure from a file (any format ASE reads); ``index`` selects one image."""

    def __init__(self, path: Path | str, index: int | str | None = None) -> None:
        self.path = Path(path)
        self.index = index

    def __call__(self) -> Atoms:
        from ase.io import read

        atoms = read(self.path, self.index, parallel=False)
        if isinstance(atoms, list):
            raise ValueError(f"index {self.index!r} selects {len(atoms)} images of {self.path}; select one")
        return atoms


class DefaultQuantityProcessor:
    """All of ``calc.results`` plus ``n_atoms``, without the keys in ``filter_keys``."""

    def __init__(self, filter_keys: list[str] | None = None) -> None:
        self.filter_keys = list(filter_keys or [])

    def __call__(self, calc: Calculator, atoms: Atoms) -> dict[str, Any]:
        quantities = {**calc.results, "n_atoms": len(atoms)}
        for key in self.filter_keys:
            quantities.pop(key, None)
        return quantities


class SinglePointASEComputer(QuantityComputer):
    """Single-point quantities (energy, forces, stress...) of a parameterised ASE calculator.

    Args:
        calc_factory: attaches a new calculator to the atoms.
        param_applier: applies the parameter dict to that calculator.
        atoms_factory: makes the base structure (called once, lazily).
        atoms_post_processor: modifies the base structure once, after it is made.
        quantity_processors: turn calculator and atoms into quantities
            (default: :class:`DefaultQuantityProcessor`).
        tag: label stored in ``static_meta_data`` (default ``"tag_None"``).

    The evaluated copy is ``ctx.temp.atoms``.
    """

    def __init__(
        self,
        calc_factory: CalculatorFactory,
        param_applier: ParameterApplier,
        atoms_factory: AtomsFactory,
        atoms_post_processor: AtomsPostProcessor | None = None,
        quantity_processors: list[QuantityProcessor] | None = None,
        tag: str | None = None,
    ) -> None:
        super().__init__()
        _check(calc_factory, CalculatorFactory, "calc_factory")
        _check(param_applier, ParameterApplier, "param_applier")
        _check(atoms_factory, AtomsFactory, "atoms_factory")
        _check(atoms_post_processor, AtomsPostProcessor, "atoms_post_processor", optional=True)
        self.calc_factory = calc_factory
        self.param_applier = param_applier
        self.atoms_factory = atoms_factory
        self.atoms_post_processor = atoms_post_processor
        self.quantity_processors: list[QuantityProcessor] = (
            [DefaultQuantityProcessor()] if quantity_processors is None else list(quantity_processors)
        )
        for processor in self.quantity_processors:
            _check(processor, QuantityProcessor, "each quantity processor")
        self.tag = tag or "tag_None"
        self.static_meta_data = {"tag": self.tag, "type": type(self).__name__}
        self._atoms: Atoms | None = None
        self._atoms_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_atoms_lock"]  # locks do not pickle; a copy gets its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._atoms_lock = threading.Lock()

    def base_atoms(self) -> Atoms:
        """The base structure, built once (thread-safe) and never modified by evaluations."""
        if self._atoms is None:
            with self._atoms_lock:
                if self._atoms is None:
                    atoms = self.atoms_factory()
                    if self.atoms_post_processor is not None:
                        self.atoms_post_processor(atoms)
                    self._atoms = atoms
        return self._atoms

    def prepare_ctx(self, parameters: Parameters, ctx: EvaluateContext) -> Atoms:
        """Put a copy of the base structure with a fresh, parameterised calculator in ``ctx.temp.atoms``."""
        atoms = self.base_atoms().copy()
        self.calc_factory(atoms)
        if atoms.calc is None:
            raise ValueError(f"{self.tag}: calc_factory did not attach a calculator to atoms.calc")
        self.param_applier(atoms, parameters)
        ctx.temp.atoms = atoms
        return atoms

    def run_calculation(self, atoms: Atoms) -> None:
        """Evaluate the calculator on ``atoms`` (a single point)."""
        atoms.calc.calculate(atoms)

    def _compute(self, parameters: Parameters, ctx: EvaluateContext) -> dict[str, Any]:
        atoms = self.prepare_ctx(parameters, ctx)
        self.run_calculation(atoms)
        quantities: dict[str, Any] = {}
        for processor in self.quantity_processors:
            quantities.update(processor(atoms.calc, atoms))
        return quantities


class MinimizationASEComputer(SinglePointASEComputer):
    """Like :class:`SinglePointASEComputer`, but the structure is relaxed (BFGS) to ``fmax``
    (eV/Å) in at most ``max_steps`` steps before the quantities are read."""

    def __init__(self, dt: float = 1e-2, fmax: float = 1e-5, max_steps: int = 2000, **kwargs: Any) -> None:
        self.dt = dt  # accepted for ChemFit compatibility; BFGS takes no time step
        self.fmax = fmax
        self.max_steps = max_steps
        super().__init__(**kwargs)

    def run_calculation(self, atoms: Atoms) -> None:
        from ase.optimize import BFGS

        BFGS(atoms, logfile=None).run(fmax=self.fmax, steps=self.max_steps)
