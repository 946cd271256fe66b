"""chemfit_core: fit interatomic-potential parameters to reference data.

Every public name is importable from here; ChemFit's module paths
(``chemfit_core.combined_objective_function`` ...) work as well.
``MPIWrapperCOB`` is imported on first use, so importing chemfit_core does not
start MPI.
"""

from chemfit_core.abstract_objective_function import (
    EvaluateContext,
    ObjectiveFunctor,
    QuantityComputer,
    QuantityComputerObjectiveFunction,
    WrappedObjectiveFunctor,
)
from chemfit_core.async_wrapper_cob import AsyncWrapperCOB
from chemfit_core.combined_objective_function import (
    CombinedObjectiveFunction,
    mean_reducer,
    nan_exception_handler,
    raising_exception_handler,
    skip_exception_handler,
    sum_reducer,
)
from chemfit_core.errors import (
    ChemFitError,
    CommandTimeoutError,
    ConfigError,
    ExternalCommandError,
    LammpsError,
    NonFiniteObjectiveError,
    OutputMissingError,
    TemplateRenderError,
    TermEvaluationError,
)
from chemfit_core.file_based_computer import (
    CommandCancelled,
    FileBasedQuantityComputer,
    render_template,
    run_command,
)
from chemfit_core.fitter import Evaluation, FitResult, Fitter, flatten_dict, unflatten_dict
from chemfit_core.lammps import LammpsQuantityComputer, read_thermo, run_lammps

__version__ = "0.1.0"

__all__ = [
    "AsyncWrapperCOB",
    "ChemFitError",
    "CombinedObjectiveFunction",
    "CommandCancelled",
    "CommandTimeoutError",
    "ConfigError",
    "EvaluateContext",
    "Evaluation",
    "ExternalCommandError",
    "FileBasedQuantityComputer",
    "FitResult",
    "Fitter",
    "LammpsError",
    "LammpsQuantityComputer",
    "MPIWrapperCOB",
    "NonFiniteObjectiveError",
    "ObjectiveFunctor",
    "OutputMissingError",
    "QuantityComputer",
    "QuantityComputerObjectiveFunction",
    "TemplateRenderError",
    "TermEvaluationError",
    "WrappedObjectiveFunctor",
    "flatten_dict",
    "mean_reducer",
    "nan_exception_handler",
    "raising_exception_handler",
    "read_thermo",
    "render_template",
    "run_command",
    "run_lammps",
    "skip_exception_handler",
    "sum_reducer",
    "unflatten_dict",
]


def __getattr__(name: str):
    if name == "MPIWrapperCOB":
        from chemfit_core.mpi_wrapper_cob import MPIWrapperCOB

        return MPIWrapperCOB
    raise AttributeError(f"module 'chemfit_core' has no attribute {name!r}")
