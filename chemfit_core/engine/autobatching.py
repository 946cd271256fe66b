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
  on CUDA the budget is found by probing, as torch-sim does;
- no call modifies or hands back what the caller passed in (loaded states,
  ``updated_state``, the convergence tensor): every batch that changed is a new
  state (torch-sim pops converged systems out of ``updated_state`` in place and
  writes into the convergence tensor).

The memory metrics (``n_atoms``, ``n_atoms_x_density``, ``n_edges``) live in
:mod:`chemfit_core.engine.memory` and are re-exported here; the probe
(:func:`measure_model_memory_forward`, :func:`determine_max_batch_size`) stays
here, where torch-sim's users and tests patch it. The two batcher classes are
written in :mod:`chemfit_core.engine.batchers` and re-exported here; they call the
probe through this module, so a patch of it reaches them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from chemfit_core.engine.memory import (
    DEFAULT_OOM_ERROR_MESSAGES,
    MemoryScaling,
    calculate_memory_scaler,
    calculate_memory_scalers,
    edge_counts,
)
from chemfit_core.engine.state import SimState, concatenate_states, detach_state_graph

__all__ = [
    "DEFAULT_OOM_ERROR_MESSAGES",
    "BinningAutoBatcher",
    "InFlightAutoBatcher",
    "MemoryScaling",
    "calculate_memory_scaler",
    "calculate_memory_scalers",
    "default_max_memory_scaler",
    "detach_state_graph",
    "determine_max_batch_size",
    "edge_counts",
    "estimate_max_memory_scaler",
    "measure_model_memory_forward",
    "to_constant_volume_bins",
]

logger = logging.getLogger(__name__)

_n_edges_scalers = edge_counts  # torch-sim's name for the ``n_edges`` metric
CPU_MAX_ATOMS = 12_000
"""Atoms per batch on CPU: larger batches gave no more throughput here and cost memory."""


def _is_cuda(model: Any) -> bool:
    device = getattr(model, "device", torch.device("cpu"))
    return torch.device(device).type == "cuda"


def measure_model_memory_forward(state: SimState, model: Any) -> float:
    """Run ``model(state)`` once; return the peak CUDA memory allocated meanwhile, GB.

    On a model that is not on CUDA the forward pass still runs (so a stand-in
    that raises an out-of-memory error is seen) and 0.0 is returned.
    """
    if not _is_cuda(model):
        model(state)
        return 0.0
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model(state)
    return torch.cuda.max_memory_allocated() / 1024**3


def determine_max_batch_size(
    state: SimState,
    model: Any,
    max_atoms: int = 500_000,
    start_size: int = 1,
    scale_factor: float = 1.6,
    oom_error_message: str | Sequence[str] = DEFAULT_OOM_ERROR_MESSAGES,
) -> int:
    """Largest number of copies of ``state`` the model runs without running out of memory.

    Grows the batch geometrically (by ``scale_factor``, at least one copy a step)
    until an out-of-memory error, recognised by any of ``oom_error_message``, or
    ``max_atoms``; returns the size two steps below the failure. Each try goes
    through :func:`measure_model_memory_forward`. Other errors propagate.
    """
    messages = [oom_error_message] if isinstance(oom_error_message, str) else list(oom_error_message)
    sizes = [start_size]
    while (nxt := max(round(sizes[-1] * scale_factor), sizes[-1] + 1)) * state.n_atoms <= max_atoms:
        sizes.append(nxt)
    try:
        for k, size in enumerate(sizes):
            try:
                measure_model_memory_forward(concatenate_states([state] * size), model)
            except RuntimeError as exc:
                if any(m in str(exc) for m in messages):
                    logger.debug("out of memory at %d copies; %d are safe", size, sizes[max(0, k - 2)])
                    return sizes[max(0, k - 2)]
                raise
        return sizes[-1]
    finally:
        if torch.cuda.is_available():  # hand the cached probe memory back to other allocators
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def estimate_max_memory_scaler(
    states: SimState | Sequence[SimState], model: Any, metric_values: Sequence[float], **kwargs: Any
) -> float:
    """Budget (in metric units) that fits on the device for the smallest and the largest system.

    Probes both with :func:`determine_max_batch_size` (``kwargs`` go to it) and
    returns the smaller of copies × metric.
    """
    low = min(range(len(metric_values)), key=lambda k: metric_values[k])
    high = max(range(len(metric_values)), key=lambda k: metric_values[k])
    budgets = [determine_max_batch_size(states[k], model, **kwargs) * float(metric_values[k]) for k in {low, high}]
    return min(budgets)


def default_max_memory_scaler(
    model: Any,
    samples: SimState | Sequence[SimState],
    memory_scales_with: MemoryScaling,
    max_atoms_to_try: int = 500_000,
    memory_scaling_factor: float = 1.6,
    max_memory_padding: float = 1.0,
    oom_error_message: str | Sequence[str] = DEFAULT_OOM_ERROR_MESSAGES,
    cutoff: float = 6.0,
    metrics: Sequence[float] | None = None,
) -> float:
    """The batch budget in units of the metric: probed on CUDA, fixed on CPU.

    On CUDA the smallest and largest of ``samples`` are probed (× ``max_memory_padding``).
    On CPU the budget is :data:`CPU_MAX_ATOMS` atoms of the first sample's kind,
    raised where needed so that no sample is too large on its own.
    """
    samples = samples.split() if isinstance(samples, SimState) else list(samples)
    if metrics is None:
        metrics = [calculate_memory_scaler(s, memory_scales_with, cutoff) for s in samples]
    if _is_cuda(model):
        budget = max_memory_padding * estimate_max_memory_scaler(
            samples,
            model,
            metrics,
            max_atoms=max_atoms_to_try,
            scale_factor=memory_scaling_factor,
            oom_error_message=oom_error_message,
        )
        logger.info("memory probe: budget %.4g (%s)", budget, memory_scales_with)
        return budget
    budget = max(CPU_MAX_ATOMS * metrics[0] / max(samples[0].n_atoms, 1), max(metrics))
    logger.info("CPU: batch budget of about %d atoms (%.4g in %s)", CPU_MAX_ATOMS, budget, memory_scales_with)
    return budget


def to_constant_volume_bins(
    items: dict[Any, float] | Sequence[Any],
    max_volume: float,
    *,
    weight_pos: int | None = None,
    key: Callable[[Any], float] | None = None,
    lower_bound: float | None = None,
    upper_bound: float | None = None,
) -> list[Any]:
    """Pack items into few bins of total weight at most ``max_volume`` (torch-sim's signature).

    Heaviest first, each into the fullest bin it fits, a new bin when none does
    (an item heavier than ``max_volume`` gets a bin of its own). Items may be a
    dict ``{key: weight}`` (bins are dicts), a list of weights (bins are lists of
    weights), or a list of records with the weight at ``weight_pos`` or given by
    ``key`` (bins are lists of records). Weights ``<= lower_bound`` or
    ``>= upper_bound`` are left out. Ties keep input order.
    """
    if lower_bound is not None and upper_bound is not None and lower_bound >= upper_bound:
        raise ValueError("lower_bound is greater or equal to upper_bound")
    if isinstance(items, dict):
        entries = [(float(w), k) for k, w in items.items()]
    elif weight_pos is not None:
        entries = [(float(item[weight_pos]), item) for item in items]
    elif key is not None:
        entries = [(float(key(item)), item) for item in items]
    elif any(isinstance(item, (tuple, list, dict)) for item in items):
        raise ValueError("Must provide weight_pos or key for a list of records")
    else:
        entries = [(float(w), w) for w in items]
    entries = [
        e
        for e in entries
        if (lower_bound is None or e[0] > lower_bound) and (upper_bound is None or e[0] < upper_bound)
    ]
    entries.sort(key=lambda e: -e[0])  # stable: ties keep input order
    bins: list[list[tuple[float, Any]]] = []
    sums: list[float] = []
    for weight, payload in entries:
        fits = [b for b, total in enumerate(sums) if total + weight <= max_volume]
        if fits:
            b = max(fits, key=lambda i: sums[i])
        else:
            bins.append([])
            sums.append(0.0)
            b = len(bins) - 1
        bins[b].append((weight, payload))
        sums[b] += weight
    if isinstance(items, dict):
        return [{payload: items[payload] for _, payload in b} for b in bins]
    return [[payload for _, payload in b] for b in bins]


# The batcher classes live in their own module and reach the probe above through this
# module, so they are imported last (this module is complete by then).
from chemfit_core.engine.batchers import BinningAutoBatcher, InFlightAutoBatcher  # noqa: E402
