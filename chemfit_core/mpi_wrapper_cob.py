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
A term that raises on a worker is reported on rank 0 with its index and name.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from mpi4py import MPI

from chemfit_core.abstract_objective_function import EvaluateContext, ObjectiveFunctor, Parameters
from chemfit_core.combined_objective_function import CombinedObjectiveFunction
from chemfit_core.errors import ChemFitError, TermEvaluationError

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
    """

    def __init__(
        self,
        cob: CombinedObjectiveFunction,
        comm: Any | None = None,
        *,
        poll_interval: float = 0.005,
    ) -> None:
        if not isinstance(cob, CombinedObjectiveFunction):
            raise TypeError(f"MPIWrapperCOB wraps a CombinedObjectiveFunction, got {type(cob).__name__}")
        self.cob = cob
        self.comm = MPI.COMM_WORLD.Dup() if comm is None else comm
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
        """Evaluate this rank's terms: ``(idx, ok, value or error text, meta, result)`` each."""
        indices = self.terms_of_rank(self.rank)
        out = []
        for idx, child in zip(indices, ctx.spawn_children(len(indices))):
            try:
                value = self.cob.evaluate_term(parameters, idx, child)
                out.append((idx, True, value, child.meta, child.result))
            except Exception as exc:  # sent to rank 0, raised there with the term's name
                cause = exc.cause if isinstance(exc, TermEvaluationError) else exc
                text = "".join(traceback.format_exception(cause))
                out.append((idx, False, f"{type(cause).__name__}: {cause} (on rank {self.rank})\n{text}", {}, None))
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
        for idx, ok, payload, meta, result in sorted(results, key=lambda r: r[0]):
            if not ok:
                raise TermEvaluationError(idx, self.cob.names[idx], RemoteTermError(payload))
            values[idx] = payload
            children[idx].meta, children[idx].result = meta, result
        ctx.collect_child_meta_data()
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
