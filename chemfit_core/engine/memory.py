"""Memory metrics of atomic systems: what a system is expected to cost a model.

torch-sim's three metrics, under its names and with its semantics (torch-sim >= 0.6):

- ``"n_atoms"``: the atom count, for models with a fixed number of neighbours;
- ``"n_atoms_x_density"``: atoms × number density (atoms²/nm³), for models with a
  radial cutoff. A fully periodic system uses its cell volume; any other uses the
  bounding box of its atoms, padded by 2 Å along each non-periodic axis. A
  system of zero volume counts its atoms only;
- ``"n_edges"``: the number of directed neighbour pairs (i→j and j→i both
  counted) within ``cutoff``, the best estimate for message-passing models and
  for molecules, and the most expensive one to compute.

The batchers (:mod:`chemfit_core.engine.autobatching`) compare these numbers
against a budget of the same unit.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from chemfit_core.engine.state import SimState

MemoryScaling = Literal["n_atoms", "n_atoms_x_density", "n_edges"]
MEMORY_SCALINGS: tuple[str, ...] = get_args(MemoryScaling)
BOX_PADDING = 2.0
"""Å added to the bounding box along each non-periodic axis for ``n_atoms_x_density``."""
DEFAULT_OOM_ERROR_MESSAGES = ("CUDA out of memory", "Failed to allocate")
"""Error texts that mean the probed batch did not fit (torch-sim's defaults)."""


def check_memory_scaling(memory_scales_with: str) -> None:
    """Raise ``ValueError`` unless ``memory_scales_with`` names a known metric."""
    if memory_scales_with not in MEMORY_SCALINGS:
        raise ValueError(
            f"Invalid metric: {memory_scales_with!r}; memory_scales_with must be one of "
            f"{', '.join(repr(m) for m in MEMORY_SCALINGS)}"
        )


def edge_counts(state: SimState, cutoff: float) -> list[float]:
    """Directed neighbour pairs within ``cutoff`` (Å) of every system (torch-sim's ``n_edges``)."""
    from chemfit_core.engine.neighbors import NeighborList

    builder = NeighborList(cutoff, skin=0.0)
    counts = state.n_atoms_per_system.tolist()
    starts = (torch.cumsum(state.n_atoms_per_system, 0) - state.n_atoms_per_system).tolist()
    edges = []
    for s, (start, n) in enumerate(zip(starts, counts)):
        pairs = builder._build(state.positions[start : start + n], state.cell[s], state.system_pbc[s])
        edges.append(2.0 * pairs.i.numel())  # a half list: each pair is two edges
    return edges


def calculate_memory_scalers(
    state: SimState, memory_scales_with: MemoryScaling = "n_atoms_x_density", cutoff: float = 6.0
) -> list[float]:
    """The memory metric of every system of ``state``, in order.

    Args:
        state: one or more systems.
        memory_scales_with: ``"n_atoms"``, ``"n_atoms_x_density"`` (atoms²/nm³) or
            ``"n_edges"``.
        cutoff: neighbour cutoff for ``"n_edges"``, Å (match the model's).
    """
    check_memory_scaling(memory_scales_with)
    if state.n_systems == 0:
        return []
    counts = state.n_atoms_per_system
    if memory_scales_with == "n_atoms":
        return [float(n) for n in counts.tolist()]
    if memory_scales_with == "n_edges":
        return edge_counts(state, cutoff)
    positions = state.positions.detach()
    index = state.system_idx.view(-1, 1).expand(-1, 3)
    shape = (state.n_systems, 3)
    upper = torch.full(shape, -torch.inf, dtype=positions.dtype, device=positions.device)
    lower = torch.full(shape, torch.inf, dtype=positions.dtype, device=positions.device)
    upper = upper.scatter_reduce(0, index, positions, reduce="amax")
    lower = lower.scatter_reduce(0, index, positions, reduce="amin")
    box = (upper - lower).clamp_min(0.0) + BOX_PADDING * (~state.system_pbc).to(positions.dtype)
    periodic = state.system_pbc.all(dim=1)
    volume = torch.where(periodic, torch.linalg.det(state.cell.detach()).abs(), box.prod(dim=1)) / 1000.0
    n = counts.to(torch.float64)
    volume = volume.to(torch.float64)
    metric = torch.where(volume > 0, n * n / torch.where(volume > 0, volume, 1.0), n)
    return metric.tolist()


def calculate_memory_scaler(
    state: SimState, memory_scales_with: MemoryScaling = "n_atoms_x_density", cutoff: float = 6.0
) -> float:
    """The memory metric of a single-system state (see :func:`calculate_memory_scalers`)."""
    if state.n_systems != 1:
        raise ValueError(
            f"calculate_memory_scaler takes one system, got {state.n_systems}; use calculate_memory_scalers for a batch"
        )
    return calculate_memory_scalers(state, memory_scales_with, cutoff)[0]
