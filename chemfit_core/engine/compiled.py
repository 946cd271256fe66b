"""What the compiled CPU loops of the models share: the list as arrays, ranges per thread, the sums.

A model's compiled loop (numba, ``nogil``) runs over a contiguous range ``start:stop`` of the
half list and sums into its own buffers: per-system energies (eV), per-atom forces ``[n, 3]``
(eV/Å) and, if asked, per-system virials ``[n_systems, 3, 3]`` (eV). :func:`run_ranges` gives
each intra-op thread (``torch.get_num_threads()``) one range; :func:`summed_results` adds the
threads' buffers and turns the virial into the stress (eV/Å³) as
:class:`~chemfit_core.models.base.Sums` does.

The loops themselves repeat a few lines each (the pair's vector with its image offset, the
force and virial sums): moved into shared compiled functions, even inlined, they made the
EAM force pass 1.35–1.7× slower per pair (measured, 10,976 atoms), so each loop keeps its own.
The loops are compiled with numpy's error model: atoms at distance 0 give inf or NaN, as the
torch path does, rather than an exception from inside the loop.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from chemfit_core.engine.neighbors import Pairs
from chemfit_core.engine.state import SimState

MIN_PAIRS_PER_THREAD = 65_536
"""Pairs below which one more thread is not worth its start (a range of the list per thread)."""


@dataclasses.dataclass(frozen=True)
class ListArrays:
    """The state's positions (Å) and its half list as arrays a compiled loop reads without copies."""

    pos: np.ndarray  # [n_atoms, 3] in the state's float type
    pi: np.ndarray  # [n_pairs] int32
    pj: np.ndarray  # [n_pairs] int32
    image: np.ndarray  # [n_image] int64, pairs with a periodic image, ascending
    offsets: np.ndarray  # [3, n_image] their Cartesian image offsets, Å
    system: np.ndarray  # [n_atoms] int64
    float_type: type

    @classmethod
    def of(cls, state: SimState, pairs: Pairs) -> ListArrays:
        """Arrays of ``state`` (on a CPU) and its ``pairs``."""
        kind = np.float64 if state.dtype == torch.float64 else np.float32
        return cls(
            pos=as_array(state.positions, kind),
            pi=pairs.pi.numpy(),
            pj=pairs.pj.numpy(),
            image=as_array(pairs.image, np.int64),
            offsets=as_array(pairs.image_offsets(state.cell), kind),
            system=as_array(state.system_idx, np.int64),
            float_type=kind,
        )

    @property
    def loop_arguments(self) -> tuple:
        """``(pos, pi, pj, image, offsets)``: the first arguments of every compiled loop."""
        return self.pos, self.pi, self.pj, self.image, self.offsets


def runs_compiled(model: torch.nn.Module, state: SimState, graph: bool) -> bool:
    """Whether ``model`` sums ``state`` in its compiled loop: asked for (``model.compiled``), on a CPU,
    without a ``graph`` to keep and with finite positions (a NaN or infinite position takes the torch
    path, whose results are then non-finite as they must be, never a silently clamped table lookup)."""
    return (
        getattr(model, "compiled", False)
        and state.device.type == "cpu"
        and not graph
        and bool(torch.isfinite(state.positions).all())
    )


def as_array(tensor: torch.Tensor, kind) -> np.ndarray:
    """A contiguous numpy array of ``tensor`` (detached, on the CPU) of type ``kind``."""
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=kind)


def thread_ranges(n_pairs: int) -> list[tuple[int, int]]:
    """Contiguous ranges of the list, one per thread that has enough pairs to be worth it."""
    threads = max(1, min(torch.get_num_threads(), n_pairs // MIN_PAIRS_PER_THREAD))
    edges = np.linspace(0, n_pairs, threads + 1).astype(np.int64).tolist()
    return list(zip(edges[:-1], edges[1:]))


def run_ranges(kernel, ranges: list[tuple[int, int]], buffers: list[tuple], args: tuple) -> None:
    """``kernel(*args, start, stop, *buffers[t])`` for every range, on threads when there are several."""
    if len(ranges) == 1:
        kernel(*args, *ranges[0], *buffers[0])
        return
    with ThreadPoolExecutor(len(ranges)) as pool:
        list(pool.map(lambda t: kernel(*args, *ranges[t], *buffers[t]), range(len(ranges))))


def result_buffers(state: SimState, arrays: ListArrays, compute_stress: bool, count: int) -> list[tuple]:
    """``count`` zeroed (energy, forces, virial) buffers; the virial is empty without a stress."""
    kind, n_systems = arrays.float_type, state.n_systems
    return [
        (
            np.zeros(n_systems, dtype=kind),
            np.zeros((state.n_atoms, 3), dtype=kind),
            np.zeros((n_systems if compute_stress else 0, 3, 3), dtype=kind),
        )
        for _ in range(count)
    ]


def summed_results(state: SimState, parts: list[tuple], compute_stress: bool) -> dict[str, torch.Tensor]:
    """``energy`` [n_systems] eV, ``forces`` [n_atoms, 3] eV/Å and, if asked, ``stress`` [n_systems, 3, 3]
    eV/Å³ (zero for systems not periodic along all three axes) from the threads' buffers."""
    energy, forces, virial = (np.sum(a, axis=0) if len(parts) > 1 else a[0] for a in zip(*parts))
    device = state.device
    out = {"energy": torch.from_numpy(energy).to(device), "forces": torch.from_numpy(forces).to(device)}
    if compute_stress:
        volume = torch.linalg.det(state.cell.detach()).abs().clamp_min(1e-30)
        stress = torch.from_numpy(virial).to(device) / volume.view(-1, 1, 1)
        out["stress"] = torch.where(state.system_pbc.all(dim=1).view(-1, 1, 1), stress, torch.zeros_like(stress))
    return out
