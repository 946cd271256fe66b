"""The relaxation engine: batched states, batchers, optimisers and ``relax_structures``.

torch-sim's names are importable from here (``import chemfit_core.engine as ts``:
``ts.SimState``, ``ts.fire_init``, ``ts.bfgs_step``, ``ts.CellFilter``...); they are
imported on first use (PEP 562), so importing one submodule stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "BFGSState": "bfgs",
    "BinningAutoBatcher": "autobatching",
    "CellFilter": "cell_filter",
    "FireParameters": "fire",
    "FireState": "fire",
    "InFlightAutoBatcher": "autobatching",
    "LBFGSState": "lbfgs",
    "OPTIM_REGISTRY": "optimizers",
    "OptimState": "cell_filter",
    "Optimizer": "optimizers",
    "RelaxResult": "relax",
    "SimState": "state",
    "TorchCalculator": "ase_calculator",
    "atoms_to_state": "state",
    "bfgs_init": "bfgs",
    "bfgs_step": "bfgs",
    "concatenate_states": "state",
    "detach_state_graph": "state",
    "fire_init": "fire",
    "fire_step": "fire",
    "lbfgs_init": "lbfgs",
    "lbfgs_step": "lbfgs",
    "relax_structures": "relax",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'chemfit_core.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"chemfit_core.engine.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
