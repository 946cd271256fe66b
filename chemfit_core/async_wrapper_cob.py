"""Concurrent evaluation of a combined objective's terms with asyncio and threads.

:class:`AsyncWrapperCOB` schedules one asyncio task per term; each task runs its
term's blocking work (an external LAMMPS run, say) in a thread pool, and the
weighted values are reduced exactly as the serial
:class:`~chemfit_core.combined_objective_function.CombinedObjectiveFunction` does.

Differences from ChemFit's wrapper, each a measured weakness there:

- the thread pool and the event loop are made once and reused, not per call;
- when a term fails (policy ``"raise"``) its siblings are told to stop: terms not
  started are skipped and running external commands are killed; the call returns
  only when every thread is done, then raises the error naming the term;
- a wrapper nested inside another that shares its executor evaluates its terms in
  the calling worker thread instead of deadlocking on a full pool.

The terms run in ``ctx.executor`` when the context has one, else in the
``executor`` given to the wrapper, else in the wrapper's own thread pool (ChemFit's
order). A thread pool gets the fast path above; any other
:class:`~chemfit_core.abstract_objective_function.ExecutorLike` (a process pool, say)
gets one job per term, whose context state is copied back to the caller's child
context. :class:`ExecutorWrapperCOB` is ChemFit 3.1.1's name for this wrapper.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import os
import threading
import weakref
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from chemfit_core.abstract_objective_function import EvaluateContext, ExecutorLike, ObjectiveFunctor, Parameters
from chemfit_core.combined_objective_function import CombinedObjectiveFunction

_worker_state = threading.local()


class _Skipped:
    """Marks a term that was not run because a sibling had already failed."""


_SKIPPED = _Skipped()


class _TermBatch:
    """One evaluation's terms, worked off by pool threads, results handed back at once.

    Two costs dominate a trivial term: the thread pool's per-job hand-off and
    waking the event loop from another thread (each a context switch, tens of µs
    on a busy machine). So the batch submits only as many pool jobs as the pool
    has workers; each job takes terms from a shared queue until none are left,
    and the loop is woken once, when the last term has finished. A failure sets
    ``cancel`` at once: terms not yet started are skipped and running external
    commands (which watch the event) are killed. The error is delivered only
    after every term has returned, so no thread is left running.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None,
        run_term: Any,
        parameters: Parameters,
        contexts: list[EvaluateContext],
        loop_is_waiting: bool = True,
    ):
        self.loop = loop
        self.n_terms = len(contexts)
        # A caller that blocks on ``finished`` reads the outcomes directly: no futures.
        self.futures = [loop.create_future() for _ in contexts] if loop_is_waiting else []
        self.cancel = threading.Event()
        self._run_term = run_term
        self._parameters = parameters
        self._contexts = contexts
        self._queue = collections.deque(range(len(contexts)))
        self._outcomes: list[tuple[bool, Any]] = [(True, None)] * len(contexts)
        self._first_error: int | None = None
        self._remaining = len(contexts)
        self._lock = threading.Lock()
        # Held until the last term is done; a synchronous caller blocked on it is
        # woken directly instead of through the event loop's self-pipe.
        self.finished = threading.Lock()
        self.loop_is_waiting = loop_is_waiting
        if contexts:
            self.finished.acquire()

    def work(self) -> None:
        """Run queued terms one after another until the queue is empty."""
        while True:
            try:
                idx = self._queue.popleft()
            except IndexError:
                return
            if self.cancel.is_set():
                outcome: tuple[bool, Any] = (True, _SKIPPED)
            else:
                try:
                    outcome = (True, self._run_term(self._parameters, idx, self._contexts[idx]))
                except BaseException as exc:  # delivered to the awaiting task, never lost
                    outcome = (False, exc)
            with self._lock:
                self._outcomes[idx] = outcome
                if not outcome[0] and self._first_error is None:
                    self._first_error = idx
                    self.cancel.set()
                self._remaining -= 1
                last = self._remaining == 0
            if last:
                self.finished.release()
                if self.loop_is_waiting:
                    self.loop.call_soon_threadsafe(self.deliver)

    def values(self) -> list[Any]:
        """The terms' values once all have run; the first failure is raised."""
        if self._first_error is not None:
            raise self._outcomes[self._first_error][1]
        return [value for _, value in self._outcomes]

    def deliver(self) -> None:
        """Resolve every term's future (in the loop's thread) once all have run."""
        if self._first_error is not None:
            error = self._outcomes[self._first_error][1]
            for future in self.futures:
                if not future.done():
                    future.set_exception(error)
            return
        for future, (_, value) in zip(self.futures, self._outcomes):
            if not future.done():
                future.set_result(value)


async def _await(future: asyncio.Future) -> Any:
    return await future


def _evaluate_term_elsewhere(
    cob: CombinedObjectiveFunction, parameters: Parameters, idx: int, ctx: EvaluateContext
) -> tuple[float | None, dict[str, Any]]:
    """One term, run by a non-thread executor: its weighted value and what it wrote into ``ctx``."""
    return cob.evaluate_term(parameters, idx, ctx), ctx.to_result_state()


async def _await_future_like(future: Any) -> Any:
    if isinstance(future, concurrent.futures.Future):
        return await asyncio.wrap_future(future)
    return await asyncio.get_running_loop().run_in_executor(None, future.result)


def _pool_size(executor: Executor, default: int) -> int:
    """Number of worker threads of ``executor`` (``default`` when it does not say)."""
    size = getattr(executor, "_max_workers", None)
    return size if isinstance(size, int) and size > 0 else default


def _executors_of_this_thread() -> set[int]:
    return getattr(_worker_state, "executors", set())


def _close_loops(loops: list[asyncio.AbstractEventLoop]) -> None:
    for loop in loops:
        if not loop.is_closed() and not loop.is_running():
            loop.close()


class AsyncWrapperCOB(ObjectiveFunctor):
    """Evaluate the terms of ``cob`` concurrently: one asyncio task per term.

    Args:
        cob: the combined objective whose terms run concurrently.
        executor: executor for the blocking work (used when ``ctx.executor`` is not
            set); the caller owns it.
        max_workers: size of the wrapper's own pool when ``executor`` is None
            (default: Python's, ``min(32, cpu_count + 4)``). Set it to the number
            of external runs the machine can take at once.

    Use ``wrapper(params)`` from ordinary code and ``await wrapper.async_call(params)``
    inside a running event loop (Jupyter, async frameworks).
    """

    def __init__(
        self,
        cob: CombinedObjectiveFunction,
        executor: ExecutorLike | None = None,
        *,
        max_workers: int | None = None,
    ) -> None:
        if not isinstance(cob, CombinedObjectiveFunction):
            raise TypeError(f"AsyncWrapperCOB wraps a CombinedObjectiveFunction, got {type(cob).__name__}")
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.cob = cob
        self.max_workers = max_workers
        self._executor = executor
        self._owns_executor = executor is None
        self._lock = threading.Lock()
        self._thread_loops = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._finalizer = weakref.finalize(self, _close_loops, self._loops)

    # -- resources --------------------------------------------------------------------
    @property
    def executor(self) -> ExecutorLike:
        """The wrapper's executor: the one given, else its own thread pool (made on first use)."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    workers = self.max_workers or min(32, (os.cpu_count() or 1) + 4)
                    pool = ThreadPoolExecutor(workers, thread_name_prefix="chemfit-term")
                    weakref.finalize(self, pool.shutdown, wait=False)
                    self._executor = pool
        return self._executor

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = getattr(self._thread_loops, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._thread_loops.loop = loop
            with self._lock:
                self._loops.append(loop)
        return loop

    def close(self) -> None:
        """Shut down the wrapper's own pool (waiting for its threads) and event loops."""
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            _close_loops(self._loops)
            self._loops.clear()

    def __enter__(self) -> AsyncWrapperCOB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def n_terms(self) -> int:
        """Number of terms of the wrapped objective."""
        return self.cob.n_terms()

    def executor_for(self, ctx: EvaluateContext | None) -> ExecutorLike:
        """Where the terms of an evaluation with ``ctx`` run: ``ctx.executor``, else :attr:`executor`."""
        chosen = None if ctx is None else ctx.executor
        return chosen if chosen is not None else self.executor

    # -- evaluation -------------------------------------------------------------------
    def __call__(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "AsyncWrapperCOB was called from inside a running event loop (a notebook "
                "or an async framework); use `await wrapper.async_call(params)` there instead"
            )
        if ctx is None:
            ctx = EvaluateContext()
        if id(self.executor_for(ctx)) in _executors_of_this_thread():
            # Nested inside a wrapper that shares our pool: waiting for free workers
            # from one of them would deadlock, so evaluate here, in order.
            return self._evaluate_inline(parameters, ctx)
        if isinstance(self.executor_for(ctx), ThreadPoolExecutor):
            return self._evaluate_blocking(parameters, ctx)  # no event loop needed
        return self._loop().run_until_complete(self._evaluate(parameters, ctx))

    def _start_batch(self, parameters: Parameters, ctx: EvaluateContext, loop: asyncio.AbstractEventLoop | None):
        """Spawn the children and start the pool's workers on them (thread pools only)."""
        ctx.parameters = parameters
        executor = self.executor_for(ctx)
        children = self.cob.spawn_term_contexts(ctx)
        run_term = functools.partial(self._run_term, executor=executor)
        batch = _TermBatch(loop, run_term, parameters, children, loop_is_waiting=loop is not None)
        ctx.shared.cancel = batch.cancel
        for _ in range(min(len(children), _pool_size(executor, len(children)))):
            executor.submit(batch.work)
        return batch

    def _evaluate_blocking(self, parameters: Parameters, ctx: EvaluateContext) -> float:
        """A synchronous call on a thread pool: block on the batch (a thread-to-thread wake-up),
        with no event loop, task or future per term."""
        batch = self._start_batch(parameters, ctx, loop=None)
        try:
            if batch.n_terms:
                batch.finished.acquire()
            values = batch.values()
        finally:
            ctx.collect_child_meta_data()
        return self.cob.reduce(values, ctx)

    async def async_call(self, parameters: Parameters, ctx: EvaluateContext | None = None) -> float:
        """Evaluate all terms concurrently and return the reduced (weighted) objective."""
        return await self._evaluate(parameters, ctx)

    async def _evaluate(self, parameters: Parameters, ctx: EvaluateContext | None) -> float:
        if ctx is None:
            ctx = EvaluateContext()
        executor = self.executor_for(ctx)
        if not isinstance(executor, ThreadPoolExecutor):
            ctx.parameters = parameters
            children = self.cob.spawn_term_contexts(ctx)
            return await self._evaluate_elsewhere(executor, parameters, ctx, children)
        batch = self._start_batch(parameters, ctx, asyncio.get_running_loop())
        tasks = [asyncio.ensure_future(_await(future)) for future in batch.futures]
        try:
            # all finish together (see _TermBatch); every outcome is retrieved
            values = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            ctx.collect_child_meta_data()
        for value in values:
            if isinstance(value, BaseException):
                raise value
        return self.cob.reduce(values, ctx)

    async def _evaluate_elsewhere(
        self, executor: ExecutorLike, parameters: Parameters, ctx: EvaluateContext, children: list[EvaluateContext]
    ) -> float:
        """One job per term in a non-thread executor; after a failure the jobs not started are
        cancelled, and the error is raised once every job has returned."""
        futures = [
            executor.submit(_evaluate_term_elsewhere, self.cob, parameters, idx, child)
            for idx, child in enumerate(children)
        ]
        tasks = [asyncio.ensure_future(_await_future_like(future)) for future in futures]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                if any(not task.cancelled() and task.exception() is not None for task in done):
                    for future in futures:
                        future.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            ctx.collect_child_meta_data()
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        real = [e for e in errors if not isinstance(e, (asyncio.CancelledError, concurrent.futures.CancelledError))]
        if real or errors:
            raise (real or errors)[0]
        values = []
        for child, (value, state) in zip(children, outcomes):
            child.apply_result_state(state)
            values.append(value)
        ctx.collect_child_meta_data()
        return self.cob.reduce(values, ctx)

    async def get_contrib(self, parameters: Parameters, idx: int, ctx: EvaluateContext | None = None) -> float | None:
        """Weighted value of term ``idx`` alone, computed in the thread pool."""
        if ctx is None:
            ctx = EvaluateContext()
        loop = asyncio.get_running_loop()
        executor = self.executor_for(ctx)
        if not isinstance(executor, ThreadPoolExecutor):
            value, state = await _await_future_like(
                executor.submit(_evaluate_term_elsewhere, self.cob, parameters, idx, ctx)
            )
            ctx.apply_result_state(state)
            return value
        return await loop.run_in_executor(
            executor, functools.partial(self._run_term, executor=executor), parameters, idx, ctx
        )

    def _run_term(self, parameters: Parameters, idx: int, ctx: EvaluateContext, executor: Executor) -> Any:
        cancel = getattr(ctx.shared, "cancel", None)
        if cancel is not None and cancel.is_set():
            return _SKIPPED
        executors = _executors_of_this_thread()
        mine = id(executor)
        nested = mine in executors
        if not nested:
            _worker_state.executors = executors | {mine}
        try:
            return self.cob.evaluate_term(parameters, idx, ctx)
        finally:
            if not nested:
                _worker_state.executors = executors

    def _evaluate_inline(self, parameters: Parameters, ctx: EvaluateContext) -> float:
        return self.cob(parameters, ctx)

    @property
    def last_contributions(self) -> list[float | None]:
        """Weighted value of each term in the last finished evaluation."""
        return self.cob.last_contributions


class ExecutorWrapperCOB(AsyncWrapperCOB):
    """ChemFit 3.1.1's name: ``ExecutorWrapperCOB(cob, executor=None)`` evaluates the terms of
    ``cob`` in ``ctx.executor``, else in ``executor``, else in a thread pool of its own.

    It is :class:`AsyncWrapperCOB` (same failure handling, no leaked threads); use it as a
    context manager, or call :meth:`close`, to shut its own pool down.
    """
