"""ChemFit's module path of :class:`ExecutorWrapperCOB` (implemented in :mod:`chemfit_core.async_wrapper_cob`)."""

from chemfit_core.async_wrapper_cob import ExecutorWrapperCOB

__all__ = ["ExecutorWrapperCOB"]
