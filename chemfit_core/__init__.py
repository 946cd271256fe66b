"""chemfit_core: fit interatomic-potential parameters to reference data.

Every public name is importable from here; ChemFit's module paths
(``chemfit_core.combined_objective_function`` ...) work as well. Names are imported
on first use (PEP 562), so a process that needs one module — a Snakemake script, the
``chemfit relax`` command — does not pay for scipy.optimize and the rest, and
importing chemfit_core does not start MPI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_MODULE_OF = {
    "Aggregator": "chemfit_core.combined_objective_function",
    "AsyncWrapperCOB": "chemfit_core.async_wrapper_cob",
    "ChemFitError": "chemfit_core.errors",
    "ChildContextConfigurator": "chemfit_core.abstract_objective_function",
    "CombinedObjectiveFunction": "chemfit_core.combined_objective_function",
    "CommandCancelled": "chemfit_core.file_based_computer",
    "CommandTimeoutError": "chemfit_core.errors",
    "ConfigError": "chemfit_core.errors",
    "EvaluateContext": "chemfit_core.abstract_objective_function",
    "Evaluation": "chemfit_core.fitter",
    "ExecutorLike": "chemfit_core.abstract_objective_function",
    "ExecutorWrapperCOB": "chemfit_core.async_wrapper_cob",
    "ExternalCommandError": "chemfit_core.errors",
    "FileBasedQuantityComputer": "chemfit_core.file_based_computer",
    "FitResult": "chemfit_core.fitter",
    "Fitter": "chemfit_core.fitter",
    "FitterEvaluateContext": "chemfit_core.fitter",
    "FutureLike": "chemfit_core.abstract_objective_function",
    "LammpsError": "chemfit_core.errors",
    "LammpsQuantityComputer": "chemfit_core.external.lammps",
    "MPIWrapperCOB": "chemfit_core.mpi_wrapper_cob",
    "MinimizationASEComputer": "chemfit_core.ase_objective_function",
    "NonFiniteObjectiveError": "chemfit_core.errors",
    "ObjectiveFunctor": "chemfit_core.abstract_objective_function",
    "OutputMissingError": "chemfit_core.errors",
    "PathAtomsFactory": "chemfit_core.ase_objective_function",
    "QuantityComputer": "chemfit_core.abstract_objective_function",
    "QuantityComputerObjectiveFunction": "chemfit_core.abstract_objective_function",
    "Reducer": "chemfit_core.combined_objective_function",
    "SinglePointASEComputer": "chemfit_core.ase_objective_function",
    "TemplateRenderError": "chemfit_core.errors",
    "TermEvaluationError": "chemfit_core.errors",
    "WrappedObjectiveFunctor": "chemfit_core.wrap_funcs",
    "WrappedQuantityComputer": "chemfit_core.wrap_funcs",
    "WrappedReducer": "chemfit_core.combined_objective_function",
    "check_params_near_bounds": "chemfit_core.utils",
    "flatten_dict": "chemfit_core.fitter",
    "mean_reducer": "chemfit_core.combined_objective_function",
    "name_term_error": "chemfit_core.errors",
    "nan_exception_handler": "chemfit_core.combined_objective_function",
    "raising_exception_handler": "chemfit_core.combined_objective_function",
    "read_thermo": "chemfit_core.external.lammps",
    "render_template": "chemfit_core.file_based_computer",
    "root_mean_reducer": "chemfit_core.combined_objective_function",
    "run_command": "chemfit_core.file_based_computer",
    "run_lammps": "chemfit_core.external.lammps",
    "skip_exception_handler": "chemfit_core.combined_objective_function",
    "sum_reducer": "chemfit_core.combined_objective_function",
    "unflatten_dict": "chemfit_core.fitter",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'chemfit_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
