"""Batching many structures for one model: torch-sim's batcher API, better internals.

:class:`InFlightAutoBatcher` and :class:`BinningAutoBatcher` take torch-sim's
constructor arguments and follow its documented semantics (``load_states``,
``next_batch``, ``restore_original_order``). What is done differently, each a
measured weakness of torch-sim 0.6.2:

- freed room is refilled with the largest waiting structure that fits, not only
  in arrival order, so one large structure does not stall the queue; a structure
  passed over too often is given priority, so it cannot starve either;
- a batch is rebuilt only when something changed (a structure left or joined);
- ``max_iterations`` counts calls of ``next_batch`` per structure;
- every structure is checked against the budget, the first one included;
- empty input gives an empty result, not a bare ``StopIteration``;
- on CPU, where probing for out-of-memory cannot work, a fixed budget is used;
  on CUDA the budget is found by probing, as torch-sim does.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch

from chemfit_core.engine.state import SimState, concatenate_states

logger = logging.getLogger(__name__)

MemoryScaling = Literal["n_atoms", "n_atoms_x_density"]
DEFAULT_OOM_ERROR_MESSAGES = ("CUDA out of memory", "Failed to allocate")
CPU_MAX_ATOMS = 12_000
"""Atoms per batch on CPU: larger batches gave no more throughput here and cost memory."""


def calculate_memory_scaler(state: SimState, memory_scales_with: MemoryScaling = "n_atoms_x_density") -> float:
    """Memory metric of one system: its atom count, or atoms × number density (atoms/nm³).

    A system without periodicity uses its bounding box (padded by 2 Å per axis).
    """
    n_atoms = state.n_atoms
    if memory_scales_with == "n_atoms":
        return float(n_atoms)
    if memory_scales_with == "n_atoms_x_density":
        if bool(state.pbc.all()):
            volume = float(torch.linalg.det(state.cell[0]).abs()) / 1000.0
        else:
            span = state.positions.max(0).values - state.positions.min(0).values + 2.0
            volume = float(span.prod()) / 1000.0
        return n_atoms * n_atoms / max(volume, 1e-12)
    raise ValueError(f"memory_scales_with must be 'n_atoms' or 'n_atoms_x_density', got {memory_scales_with!r}")


def calculate_memory_scalers(state: SimState, memory_scales_with: MemoryScaling = "n_atoms_x_density") -> list[float]:
    """Memory metric of every system of a batch."""
    return [calculate_memory_scaler(s, memory_scales_with) for s in state.split()]


def _is_cuda(model: Any) -> bool:
    device = getattr(model, "device", torch.device("cpu"))
    return torch.device(device).type == "cuda"


def determine_max_batch_size(
    state: SimState,
    model: Any,
    max_atoms: int = 500_000,
    start_size: int = 1,
    scale_factor: float = 1.6,
    oom_error_message: str | Sequence[str] = DEFAULT_OOM_ERROR_MESSAGES,
) -> int:
    """Largest number of copies of ``state`` the model runs without running out of memory.

    Grows the batch geometrically until an out-of-memory error (matched by
    message) or ``max_atoms``; returns the size two steps below the failure.
    """
    messages = [oom_error_message] if isinstance(oom_error_message, str) else list(oom_error_message)
    sizes = [start_size]
    while (nxt := max(round(sizes[-1] * scale_factor), sizes[-1] + 1)) * state.n_atoms <= max_atoms:
        sizes.append(nxt)
    try:
        for k, size in enumerate(sizes):
            try:
                model(concatenate_states([state] * size))
            except RuntimeError as exc:
                if any(m in str(exc) for m in messages):
                    return sizes[max(0, k - 2)]
                raise
        return sizes[-1]
    finally:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def default_max_memory_scaler(
    model: Any,
    sample: SimState,
    memory_scales_with: MemoryScaling,
    max_atoms_to_try: int = 500_000,
    memory_scaling_factor: float = 1.6,
    max_memory_padding: float = 1.0,
    oom_error_message: str | Sequence[str] = DEFAULT_OOM_ERROR_MESSAGES,
) -> float:
    """The batch budget in units of the metric: probed on CUDA, fixed on CPU."""
    metric = calculate_memory_scaler(sample, memory_scales_with)
    if _is_cuda(model):
        n = determine_max_batch_size(sample, model, max_atoms_to_try, 1, memory_scaling_factor, oom_error_message)
        budget = n * metric * max_memory_padding
        logger.info("memory probe: %d copies of a %d-atom system fit; budget %.4g", n, sample.n_atoms, budget)
        return budget
    budget = CPU_MAX_ATOMS * metric / sample.n_atoms
    logger.info("CPU: batch budget of %d atoms (%.4g in %s)", CPU_MAX_ATOMS, budget, memory_scales_with)
    return budget


def to_constant_volume_bins(weights: dict[int, float], max_volume: float) -> list[dict[int, float]]:
    """Pack items into few bins of at most ``max_volume``: largest first, into the fullest bin that fits."""
    bins: list[dict[int, float]] = []
    sums: list[float] = []
    for key, weight in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0])):
        fits = [b for b, total in enumerate(sums) if total + weight <= max_volume]
        if fits:
            b = max(fits, key=lambda i: sums[i])
        else:
            bins.append({})
            sums.append(0.0)
            b = len(bins) - 1
        bins[b][key] = weight
        sums[b] += weight
    return bins


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
        if memory_scales_with not in ("n_atoms", "n_atoms_x_density"):
            raise ValueError(f"memory_scales_with must be 'n_atoms' or 'n_atoms_x_density', got {memory_scales_with!r}")
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

    def _budget_for(self, sample: SimState) -> float:
        if self.max_memory_scaler is None:
            self.max_memory_scaler = default_max_memory_scaler(
                self.model, sample, self.memory_scales_with, self.max_atoms_to_try,
                self.memory_scaling_factor, self.max_memory_padding, self.oom_error_message,
            )
        return self.max_memory_scaler

    def _check(self, index: int, metric: float) -> None:
        if metric > self.max_memory_scaler:
            raise ValueError(
                f"state {index} has a memory metric of {metric:.4g} ({self.memory_scales_with}), above "
                f"max_memory_scaler={self.max_memory_scaler:.4g}; raise max_memory_scaler or split the structure"
            )


class BinningAutoBatcher(_BatcherBase):
    """Group states into fixed batches of similar cost (for runs of equal length, e.g. MD).

    ``load_states`` packs the states into as few batches as fit the budget;
    iterate (``for batch, indices in batcher``) or call ``next_batch()``; put the
    processed batches back in input order with ``restore_original_order``.
    """

    def load_states(self, states: SimState | Sequence[SimState]) -> float:
        """Pack ``states`` (a batched state or a list) into batches; return the budget."""
        singles = states.split() if isinstance(states, SimState) else list(states)
        self.index_bins: list[list[int]] = []
        self.batched_states: list[list[SimState]] = []
        self.current_state_bin = 0
        if not singles:
            self.memory_scalers = []
            return self.max_memory_scaler or 0.0
        self.memory_scalers = [calculate_memory_scaler(s, self.memory_scales_with) for s in singles]
        self._budget_for(singles[0])
        for index, metric in enumerate(self.memory_scalers):
            self._check(index, metric)
        self.index_to_scaler = dict(enumerate(self.memory_scalers))
        bins = to_constant_volume_bins(self.index_to_scaler, self.max_memory_scaler)
        self.index_bins = [sorted(b) for b in bins]
        self.batched_states = [[singles[i] for i in b] for b in self.index_bins]
        logger.info("BinningAutoBatcher: %d states in %d batches", len(singles), len(bins))
        return self.max_memory_scaler

    def next_batch(self) -> tuple[SimState | None, list[int]]:
        """The next batch and the input indices of its states, or ``(None, [])`` when done."""
        if self.current_state_bin >= len(self.batched_states):
            return None, []
        batch = concatenate_states(self.batched_states[self.current_state_bin])
        indices = self.index_bins[self.current_state_bin]
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
        """Split processed batches and return their states in input order."""
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
    order.

    Args (torch-sim's, plus):
        return_indices: also return the input indices of the batch's states.
        max_iterations: calls of ``next_batch`` after which a state is completed
            regardless of convergence.
        lookahead: waiting states read ahead from an iterator to choose from when
            refilling (a list or batched state is seen whole).
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
            model, memory_scales_with=memory_scales_with, cutoff=cutoff, max_memory_scaler=max_memory_scaler,
            max_atoms_to_try=max_atoms_to_try, memory_scaling_factor=memory_scaling_factor,
            max_memory_padding=max_memory_padding, oom_error_message=oom_error_message,
        )
        if max_iterations is not None and max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        self.return_indices = return_indices
        self.max_iterations = max_iterations
        self.lookahead = lookahead
        self.max_passes = max_passes
        self.load_states([])

    # -- loading ------------------------------------------------------------------------------
    def load_states(self, states: SimState | Iterable[SimState]) -> float | None:
        """Queue ``states`` (a list, an iterator or a batched state); resets all tracking."""
        if isinstance(states, SimState):
            states = states.split()
        self._source: Iterator[SimState] = iter(states)
        self._waiting: list[tuple[int, SimState, float]] = []  # (input index, state, metric)
        self._passes: dict[int, int] = {}
        self._next_index = 0
        self._source_done = False
        self.memory_scalers: list[float] = []
        self.current_idx: list[int] = []
        self.current_scalers: list[float] = []
        self.completed_idx_og_order: list[int] = []
        self.iteration_count: dict[int, int] = {}
        self._first_returned = False
        return self.max_memory_scaler

    @property
    def swap_attempts(self) -> dict[int, int]:
        """Calls of ``next_batch`` each state has been through (torch-sim's older name)."""
        return self.iteration_count

    @property
    def completed_idx(self) -> list[int]:
        """Input indices of completed states, in completion order."""
        return self.completed_idx_og_order

    def _read_ahead(self) -> None:
        while not self._source_done and len(self._waiting) < self.lookahead:
            try:
                state = next(self._source)
            except StopIteration:
                self._source_done = True
                return
            if state.n_systems != 1:
                raise ValueError(f"state {self._next_index} holds {state.n_systems} systems; load single systems "
                                 "or one batched state")
            metric = calculate_memory_scaler(state, self.memory_scales_with)
            self._budget_for(state)
            self._check(self._next_index, metric)
            self.memory_scalers.append(metric)
            self._waiting.append((self._next_index, state, metric))
            self._next_index += 1

    def _admit(self) -> list[SimState]:
        """Move waiting states into the batch: largest that fits first, the long-passed first of all."""
        admitted: list[SimState] = []
        self._read_ahead()  # also fixes the budget from the first state when none was given
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
            batch = concatenate_states(new) if new else None
            return self._result(batch, [])
        if updated_state is None or convergence_tensor is None:
            raise ValueError("after the first batch, pass the updated state and its convergence tensor")
        if convergence_tensor.ndim != 1 or len(convergence_tensor) != updated_state.n_systems:
            raise ValueError(f"convergence_tensor must have shape [{updated_state.n_systems}], "
                             f"got {tuple(convergence_tensor.shape)}")
        if updated_state.n_systems != len(self.current_idx):
            raise ValueError(f"the batch holds {updated_state.n_systems} systems, the batcher tracks "
                             f"{len(self.current_idx)}")
        done = convergence_tensor.detach().to("cpu", torch.bool).clone()
        for position, index in enumerate(self.current_idx):
            self.iteration_count[index] += 1
            if self.max_iterations is not None and self.iteration_count[index] >= self.max_iterations:
                done[position] = True
        finished = torch.nonzero(done).flatten().tolist()
        completed = updated_state.pop(finished) if finished else []  # ascending batch order
        self.completed_idx_og_order.extend(self.current_idx[p] for p in finished)
        for position in reversed(finished):
            del self.current_idx[position]
            del self.current_scalers[position]
        new = self._admit()
        if not self.current_idx:
            return self._result(None, completed)
        if not finished and not new:
            return self._result(updated_state, completed)  # nothing changed: same batch
        parts = ([updated_state] if updated_state.n_systems else []) + new
        return self._result(concatenate_states(parts) if len(parts) > 1 else parts[0], completed)

    def _result(self, batch: SimState | None, completed: list[SimState]):
        if self.return_indices:
            return batch, completed, list(self.current_idx)
        return batch, completed

    def restore_original_order(self, completed_states: Sequence[SimState]) -> list[SimState]:
        """Completed states in input order (pass all of them, in the order received)."""
        if len(completed_states) != len(self.completed_idx_og_order):
            raise ValueError(f"got {len(completed_states)} completed states for "
                             f"{len(self.completed_idx_og_order)} completed indices")
        pairs = sorted(zip(self.completed_idx_og_order, completed_states), key=lambda p: p[0])
        return [state for _, state in pairs]
