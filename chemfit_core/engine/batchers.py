"""torch-sim's two batchers, :class:`BinningAutoBatcher` and :class:`InFlightAutoBatcher`.

Their behaviour (and how it differs from torch-sim 0.6.2) is described in
:mod:`chemfit_core.engine.autobatching`, torch-sim's module path, which re-exports
them. The memory budget comes from that module's probe, looked up there at call
time, so patching torch-sim's names (``autobatching.determine_max_batch_size``,
``autobatching.measure_model_memory_forward``) reaches the batchers.
"""

from __future__ import annotations

import importlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

import torch

from chemfit_core.engine.memory import (
    DEFAULT_OOM_ERROR_MESSAGES,
    MemoryScaling,
    calculate_memory_scaler,
    check_memory_scaling,
)
from chemfit_core.engine.state import SimState, concatenate_states, detach_state_graph

__all__ = ["BinningAutoBatcher", "InFlightAutoBatcher"]

logger = logging.getLogger(__name__)


def _probe() -> ModuleType:
    """The autobatching module, where the memory probe lives (and is patched)."""
    return importlib.import_module("chemfit_core.engine.autobatching")


def _fresh_batch(parts: Sequence[SimState]) -> SimState:
    """A new batch of ``parts``: tensors copied (``torch.cat``), ``info`` dicts copied, nothing shared."""
    batch = concatenate_states(parts)
    batch.info = [dict(i) for i in batch.info]
    return batch


class _BatcherBase:
    def __init__(
        self,
        model: Any,
        *,
        memory_scales_with: MemoryScaling = "n_atoms_x_density",
        cutoff: float = 6.0,
        max_memory_scaler: float | None = None,
        max_atoms_to_try: int = 500_000,
        memory_scaling_factor: float = 1.6,
        max_memory_padding: float = 1.0,
        oom_error_message: str | Sequence[str] = DEFAULT_OOM_ERROR_MESSAGES,
    ) -> None:
        check_memory_scaling(memory_scales_with)
        if memory_scaling_factor <= 1:
            raise ValueError("memory_scaling_factor must be > 1")
        self.model = model
        self.memory_scales_with = memory_scales_with
        self.cutoff = cutoff
        self.max_memory_scaler = max_memory_scaler or None
        self.max_atoms_to_try = max_atoms_to_try
        self.memory_scaling_factor = memory_scaling_factor
        self.max_memory_padding = max_memory_padding
        self.oom_error_message = oom_error_message

    def _metric(self, state: SimState) -> float:
        return calculate_memory_scaler(state, self.memory_scales_with, self.cutoff)

    def _budget_for(self, samples: Sequence[SimState], metrics: Sequence[float]) -> float:
        if self.max_memory_scaler is None:
            self.max_memory_scaler = _probe().default_max_memory_scaler(
                self.model,
                samples,
                self.memory_scales_with,
                self.max_atoms_to_try,
                self.memory_scaling_factor,
                self.max_memory_padding,
                self.oom_error_message,
                self.cutoff,
                metrics,
            )
        return self.max_memory_scaler

    def _check(self, index: int, metric: float) -> None:
        if metric > self.max_memory_scaler:
            raise ValueError(
                f"state {index} has a memory metric of {metric:.4g} ({self.memory_scales_with}), which is "
                f"greater than max_metric (max_memory_scaler) {self.max_memory_scaler:.4g}; raise "
                "max_memory_scaler or split the structure"
            )


class BinningAutoBatcher(_BatcherBase):
    """Group states into fixed batches of similar cost (for runs of equal length, e.g. MD).

    ``load_states`` packs the states into as few batches as fit the budget;
    iterate (``for batch, indices in batcher``) or call ``next_batch()``; put the
    processed batches back in input order with ``restore_original_order``.
    Every batch is a new state: the loaded states are never modified or returned.
    """

    def load_states(self, states: SimState | Sequence[SimState]) -> float:
        """Pack ``states`` (a batched state or a list) into batches; return the budget.

        Raises ``ValueError`` here if any state alone is over the budget.
        """
        singles = states.split() if isinstance(states, SimState) else list(states)
        self.index_bins: list[list[int]] = []
        self.batched_states: list[list[SimState]] = []
        self.current_state_bin = 0
        if not singles:
            self.memory_scalers = []
            self.index_to_scaler = {}
            return self.max_memory_scaler or 0.0
        self.memory_scalers = [self._metric(s) for s in singles]
        self._budget_for(singles, self.memory_scalers)
        for index, metric in enumerate(self.memory_scalers):
            self._check(index, metric)
        self.index_to_scaler = dict(enumerate(self.memory_scalers))
        bins = _probe().to_constant_volume_bins(self.index_to_scaler, self.max_memory_scaler)
        self.index_bins = [sorted(b) for b in bins]
        self.batched_states = [[singles[i] for i in b] for b in self.index_bins]
        logger.info("BinningAutoBatcher: %d states in %d batches", len(singles), len(bins))
        return self.max_memory_scaler

    def next_batch(self) -> tuple[SimState | None, list[int]]:
        """The next batch and the input indices of its states, or ``(None, [])`` when done."""
        if self.current_state_bin >= len(self.batched_states):
            return None, []
        batch = _fresh_batch(self.batched_states[self.current_state_bin])
        indices = list(self.index_bins[self.current_state_bin])
        self.current_state_bin += 1
        return batch, indices

    def __iter__(self) -> Iterator[tuple[SimState, list[int]]]:
        return self

    def __next__(self) -> tuple[SimState, list[int]]:
        batch, indices = self.next_batch()
        if batch is None:
            raise StopIteration
        return batch, indices

    def restore_original_order(self, batched_states: Sequence[SimState]) -> list[SimState]:
        """Split processed batches (or take single states) and return them in input order."""
        singles = list(itertools.chain.from_iterable(s.split() for s in batched_states))
        order = list(itertools.chain.from_iterable(self.index_bins))
        if len(singles) != len(order):
            raise ValueError(f"got {len(singles)} states back for {len(order)} loaded")
        return [s for _, s in sorted(zip(order, singles), key=lambda pair: pair[0])]


class InFlightAutoBatcher(_BatcherBase):
    """Keep a batch full while structures converge at different times (relaxations).

    Call ``next_batch(None, None)`` for the first batch, then
    ``next_batch(updated_state, convergence_tensor)`` after each step: converged
    states leave (returned as completed), waiting states join where there is
    room, and ``restore_original_order`` puts all completed states back in input
    order. Neither the loaded states nor ``updated_state`` nor the convergence
    tensor are ever modified; a batch that changed is a new state (an unchanged
    one is handed back as it is), completed states are new states without
    autograd graphs.

    Args (torch-sim's, plus):
        return_indices: also return the input indices of the batch's states.
        max_iterations: calls of ``next_batch`` after which a state is completed
            regardless of convergence.
        lookahead: waiting states to choose from when refilling. A list or a
            batched state is measured and checked whole by ``load_states``; an
            iterator is read (and checked) that far ahead.
        max_passes: refills a waiting state may be passed over before it is given
            priority (no more smaller states join until it fits).
    """

    def __init__(
        self,
        model: Any,
        *,
        memory_scales_with: MemoryScaling = "n_atoms_x_density",
        cutoff: float = 6.0,
        max_memory_scaler: float | None = None,
        max_atoms_to_try: int = 500_000,
        memory_scaling_factor: float = 1.6,
        return_indices: bool = False,
        max_iterations: int | None = None,
        max_memory_padding: float = 1.0,
        oom_error_message: str | Sequence[str] = DEFAULT_OOM_ERROR_MESSAGES,
        lookahead: int = 256,
        max_passes: int = 8,
    ) -> None:
        super().__init__(
            model,
            memory_scales_with=memory_scales_with,
            cutoff=cutoff,
            max_memory_scaler=max_memory_scaler,
            max_atoms_to_try=max_atoms_to_try,
            memory_scaling_factor=memory_scaling_factor,
            max_memory_padding=max_memory_padding,
            oom_error_message=oom_error_message,
        )
        if max_iterations is not None and max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        if lookahead < 1:
            raise ValueError("lookahead must be >= 1")
        self.return_indices = return_indices
        self.max_iterations = max_iterations
        self.lookahead = lookahead
        self.max_passes = max_passes
        self.load_states([])

    # -- loading ------------------------------------------------------------------------------
    def load_states(self, states: SimState | Iterable[SimState]) -> float | None:
        """Queue ``states`` (a list, an iterator or a batched state); resets all tracking.

        Measures the states, fixes the budget (probing on CUDA when none was
        given) and raises ``ValueError`` for a state that alone is over it: every
        state of a list or batched state, an iterator's as far as it is read ahead.
        Returns the budget (``None`` for empty input without one).
        """
        if isinstance(states, SimState):
            states = states.split()
        self._waiting: list[tuple[int, SimState, float]] = []  # (input index, state, metric)
        self._passes: dict[int, int] = {}
        self._next_index = 0
        self.memory_scalers: list[float] = []
        self.current_idx: list[int] = []
        self.current_scalers: list[float] = []
        self.completed_idx_og_order: list[int] = []
        self.iteration_count: dict[int, int] = {}
        self._first_returned = False
        if isinstance(states, Sequence):
            singles = list(states)
            for k, state in enumerate(singles):
                self._check_single(k, state)
            metrics = [self._metric(s) for s in singles]
            if singles:
                self._budget_for(singles, metrics)
            for k, metric in enumerate(metrics):
                self._check(k, metric)
            self.memory_scalers = metrics
            self._source: Iterator[tuple[SimState, float | None]] = iter(zip(singles, metrics))
        else:
            self._source = ((s, None) for s in states)
        self._source_done = False
        self._read_ahead()
        return self.max_memory_scaler

    @property
    def swap_attempts(self) -> dict[int, int]:
        """Calls of ``next_batch`` each state has been through (torch-sim's older name)."""
        return self.iteration_count

    @property
    def completed_idx(self) -> list[int]:
        """Input indices of completed states, in completion order."""
        return self.completed_idx_og_order

    @staticmethod
    def _check_single(index: int, state: SimState) -> None:
        if state.n_systems != 1:
            raise ValueError(f"state {index} holds {state.n_systems} systems; load single systems or one batched state")

    def _read_ahead(self) -> None:
        """Fill the waiting list from the source; measure and check what an iterator yields."""
        pulled: list[tuple[int, SimState, float]] = []
        while not self._source_done and len(self._waiting) + len(pulled) < self.lookahead:
            try:
                state, metric = next(self._source)
            except StopIteration:
                self._source_done = True
                break
            if metric is None:  # from an iterator: measured as read
                self._check_single(self._next_index, state)
                metric = self._metric(state)
                self.memory_scalers.append(metric)
            pulled.append((self._next_index, state, metric))
            self._next_index += 1
        if pulled and self.max_memory_scaler is None:
            self._budget_for([p[1] for p in pulled], [p[2] for p in pulled])
        for index, _, metric in pulled:
            self._check(index, metric)
        self._waiting.extend(pulled)

    def _admit(self) -> list[SimState]:
        """Move waiting states into the batch: largest that fits first, the long-passed first of all."""
        admitted: list[SimState] = []
        room = (self.max_memory_scaler or 0.0) - sum(self.current_scalers)
        while True:
            self._read_ahead()
            if not self._waiting:
                break
            starved = [w for w in self._waiting if self._passes.get(w[0], 0) >= self.max_passes]
            candidates = starved[:1] if starved else self._waiting
            fitting = [w for w in candidates if w[2] <= room]
            if not fitting:
                break
            chosen = max(fitting, key=lambda w: (w[2], -w[0]))
            self._waiting.remove(chosen)
            index, state, metric = chosen
            self.current_idx.append(index)
            self.current_scalers.append(metric)
            self.iteration_count[index] = 0
            room -= metric
            admitted.append(state)
        for index, _, _ in self._waiting:  # those left behind this time
            self._passes[index] = self._passes.get(index, 0) + 1
        return admitted

    # -- the loop ------------------------------------------------------------------------------
    def next_batch(
        self, updated_state: SimState | None, convergence_tensor: torch.Tensor | None
    ) -> tuple[SimState | None, list[SimState]] | tuple[SimState | None, list[SimState], list[int]]:
        """Remove converged states, admit waiting ones; return (batch, completed[, indices])."""
        if not self._first_returned:
            self._first_returned = True
            new = self._admit()
            return self._result(_fresh_batch(new) if new else None, [])
        if updated_state is None or convergence_tensor is None:
            raise ValueError("after the first batch, pass the updated state and its convergence tensor")
        if convergence_tensor.ndim != 1 or len(convergence_tensor) != updated_state.n_systems:
            raise ValueError(
                f"convergence_tensor must have shape [{updated_state.n_systems}], got {tuple(convergence_tensor.shape)}"
            )
        if updated_state.n_systems != len(self.current_idx):
            raise ValueError(
                f"the batch holds {updated_state.n_systems} systems, the batcher tracks {len(self.current_idx)}"
            )
        done = convergence_tensor.detach().to("cpu", torch.bool).clone()
        for position, index in enumerate(self.current_idx):
            self.iteration_count[index] += 1
            if self.max_iterations is not None and self.iteration_count[index] >= self.max_iterations:
                done[position] = True
        finished = torch.nonzero(done).flatten().tolist()  # ascending batch order
        completed = [detach_state_graph(updated_state[p]) for p in finished]  # new states, no graphs
        self.completed_idx_og_order.extend(self.current_idx[p] for p in finished)
        for position in reversed(finished):
            del self.current_idx[position]
            del self.current_scalers[position]
        new = self._admit()
        if not self.current_idx:
            return self._result(None, completed)
        if not finished and not new:
            return self._result(updated_state, completed)  # nothing changed: the same batch
        kept = updated_state if not finished else updated_state[[p for p in range(len(done)) if not done[p]]]
        parts = ([kept] if kept.n_systems else []) + new
        return self._result(_fresh_batch(parts) if new else kept, completed)

    def _result(self, batch: SimState | None, completed: list[SimState]):
        if self.return_indices:
            return batch, completed, list(self.current_idx)
        return batch, completed

    def restore_original_order(self, completed_states: Sequence[SimState]) -> list[SimState]:
        """Completed states in input order (pass all of them, in the order received)."""
        if len(completed_states) != len(self.completed_idx_og_order):
            raise ValueError(
                f"got {len(completed_states)} completed states for {len(self.completed_idx_og_order)} completed indices"
            )
        pairs = sorted(zip(self.completed_idx_og_order, completed_states), key=lambda p: p[0])
        return [state for _, state in pairs]
