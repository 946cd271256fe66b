"""Evaluate a combined objective's terms across MPI ranks (mpi4py).

Rank 0 drives the fit; every rank, rank 0 included, evaluates its share of the
terms (round-robin: rank r takes terms r, r + size, ...), and rank 0 reduces the
weighted values exactly as :class:`CombinedObjectiveFunction` does::

    with MPIWrapperCOB(cob) as wrapper:
        if wrapper.rank == 0:
            params = Fitter(wrapper, initial_params).fit_scipy()
        else:
            wrapper.worker_loop()

Leaving the ``with`` block on rank 0 — normally or by an exception — releases
the workers, so no rank waits forever. Idle workers poll with a short sleep
instead of spinning inside MPI, leaving the cores to the terms' external codes.
A term that raises on a worker is raised on rank 0 with its own type (when it can be
pickled; :class:`RemoteTermError` otherwise), its index, name, rank and traceback.
``mpi_debug_log=True`` logs every call on the communicator (DEBUG, this module's logger).
"""

from __future__ import annotations

import logging
import pickle
import time
import traceback
from typing import Any

from mpi4py import MPI

from chemfit_core.abstract_objective_function import EvaluateContext, ObjectiveFunctor, Parameters
from chemfit_core.combined_objective_function import CombinedObjectiveFunction
from chemfit_core.debug_utils import log_all_methods
from chemfit_core.errors import ChemFitError, TermEvaluationError, name_term_error

logger = logging.getLogger(__name__)

_TAG_TASK = 11
_TAG_RESULT = 12
_STOP = "__chemfit_stop__"


class RemoteTermError(ChemFitError):
    """An exception raised by a term on another rank (its traceback is in the message)."""


class MPIWrapperCOB(ObjectiveFunctor):
    """Distribute the terms of ``cob`` over the ranks of ``comm``.

    Args:
        cob: the combined objective; every rank must build the same one.
        comm: communicator (default: a duplicate of ``MPI.COMM_WORLD``).
        poll_interval: longest sleep, in seconds, between checks for messages.
        mpi_debug_log: log every communicator call at DEBUG level (ChemFit's switch).
    """

    def __init__(
        self,
        cob: CombinedObjectiveFunction,
        comm: Any | None = None,
        mpi_debug_log: bool = False,
        *,
        poll_interval: float = 0.005,
    ) -> None:
        if not isinstance(cob, CombinedObjectiveFunction):
            raise TypeError(f"MPIWrapperCOB wraps a CombinedObjectiveFunction, got {type(cob).__name__}")
        self.cob = cob
        self.comm = MPI.COMM_WORLD.Dup() if comm is None else comm
        self.mpi_debug_log = mpi_debug_log
        if mpi_debug_log:
            rank = self.comm.Get_rank()
            self.comm = log_all_methods(self.comm, lambda msg: logger.debug("[rank %d] %s", rank, msg))
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        self.poll_interval = poll_interval
        self._released = False

    def terms_of_rank(self, rank: int) -> list[int]:
        """Indices of the terms that ``rank`` evaluates."""
        return list(range(rank, self.cob.n_terms(), self.size))

    def n_terms(self) -> int:
        """Number of terms of the wrapped objective."""
        return self.cob.n_terms()

    # -- context management -------------------------------------------------------------
    def __enter__(self) -> MPIWrapperCOB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release_workers()

    def release_workers(self) -> None:
        """On rank 0: tell every worker to leave :meth:`worker_loop` (idempotent)."""
        if self.rank != 0 or self._released:
            return
        self._released = True
        for worker in range(1, self.size):
            self.comm.send(_STOP, dest=worker, tag=_TAG_TASK)

    # -- messaging ------------------------------------------------------------------------
    def _receive(self, source: int, tag: int) -> Any:
        """Blocking receive that sleeps between probes instead of spinning."""
        sleep = 1e-5
        while not self.comm.Iprobe(source=source, tag=tag):
            time.sleep(sleep)
            sleep = min(sleep * 2, self.poll_interval)
        return self.comm.recv(source=source, tag=tag)

    def _evaluate_share(self, parameters: Parameters, ctx: EvaluateContext) -> list[tuple]:
        """Evaluate this rank's terms: ``(idx, ok, value or (exception, traceback text), state)`` each."""
        indices = self.terms_of_rank(self.rank)
        n_terms = self.cob.n_terms()
        children = ctx.spawn_children(len(indices))
        configurator = self.cob.child_context_configurator
        out = []
        for idx, child in zip(indices, children):
            if configurator is not None:  # the child's absolute index, as in the serial objective
                configurator(idx_child_ctx=idx, child_ctx=child, num_children=n_terms, parent_ctx=ctx)
            try:
                value = self.cob.evaluate_term(parameters, idx, child)
                out.append((idx, True, value, child.to_result_state()))
            except Exception as exc:  # sent to rank 0, raised there with the term's name
                cause = exc.cause if isinstance(exc, TermEvaluationError) else exc
                text = "".join(traceback.format_exception(cause))
                if self.rank != 0:
                    try:
                        pickle.dumps(cause)
                    except Exception:
                        cause = RemoteTermError(f"{type(cause).__name__}: {cause}")
                out.append((idx, False, (cause, text), child.to_result_state()))
        return out

    # -- rank 0 -----------------------------------------------------------------------------
    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        if self.rank != 0:
            raise RuntimeError("MPIWrapperCOB is called on rank 0 only; other ranks run worker_loop()")
        if self._released:
            raise RuntimeError("the workers were released; make a new MPIWrapperCOB")
        if ctx is None:
            ctx = EvaluateContext()
        ctx.parameters = parameters
        ctx.meta["n_terms"] = self.cob.n_terms()
        for worker in range(1, self.size):
            self.comm.send(parameters, dest=worker, tag=_TAG_TASK)
        results = self._evaluate_share(parameters, ctx)
        for worker in range(1, self.size):
            results.extend(self._receive(worker, _TAG_RESULT))
        values: list[float | None] = [None] * self.cob.n_terms()
        children = ctx.spawn_children(self.cob.n_terms())  # rank 0's view of every term, wherever it ran
        failure = None
        for idx, ok, payload, state in sorted(results, key=lambda r: r[0]):
            children[idx].apply_result_state(state)
            if ok:
                values[idx] = payload
            elif failure is None:
                failure = (idx, *payload)
        ctx.collect_child_meta_data()
        if failure is not None:
            idx, cause, text = failure
            rank = idx % self.size
            named = name_term_error(cause, idx, self.cob.names[idx], where=f" on MPI rank {rank}")
            if rank != 0:
                named.add_note(f"traceback on rank {rank}:\n{text}")
            raise named
        return self.cob.reduce(values, ctx)

    # -- workers ----------------------------------------------------------------------------
    def worker_loop(self) -> None:
        """On ranks other than 0: evaluate shares until rank 0 releases the workers."""
        if self.rank == 0:
            raise RuntimeError("worker_loop runs on ranks other than 0")
        while True:
            message = self._receive(0, _TAG_TASK)
            if isinstance(message, str) and message == _STOP:
                return
            results = self._evaluate_share(message, EvaluateContext())
            self.comm.send(results, dest=0, tag=_TAG_RESULT)
