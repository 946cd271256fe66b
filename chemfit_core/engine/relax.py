"""Relax many structures in batches: the entry point of the ``relax`` rule and of users.

:func:`relax_structures` streams structures through an
:class:`~chemfit_core.engine.autobatching.InFlightAutoBatcher` driving batched FIRE
(:mod:`chemfit_core.engine.fire`): every system is checked for convergence (largest
force ≤ ``fmax``) after every force evaluation, converged systems leave the
batch at once and waiting ones take their place. Results come back in input
order with energies, forces, stresses and convergence flags.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from chemfit_core.engine.autobatching import InFlightAutoBatcher, MemoryScaling
from chemfit_core.engine.fire import FireParameters, FireState, fire_step, max_force
from chemfit_core.engine.state import SimState, atoms_to_state

logger = logging.getLogger(__name__)

DEFAULT_FIRE = FireParameters()
"""ASE's FIRE constants (a frozen dataclass: safe to share)."""


@dataclasses.dataclass
class RelaxResult:
    """Relaxed structures in input order, with per-structure outcome."""

    structures: list[Any]  # ase.Atoms with a SinglePointCalculator holding the results
    energies: np.ndarray  # eV
    converged: np.ndarray  # bool
    n_steps: np.ndarray  # FIRE steps taken
    fmax: np.ndarray  # final largest force, eV/Å
    wall_time_s: float
    n_force_calls: int  # batched model evaluations (torch engine)
    engine: str = "torch"
    device: str = "cpu"  # where the torch engine ran ("cpu", "cuda", "cuda:1"); LAMMPS workers: "cpu"

    @property
    def n_structures(self) -> int:
        """Number of structures relaxed."""
        return len(self.structures)


def _singles(structures: Any, device: torch.device, dtype: torch.dtype) -> Iterator[SimState]:
    import ase

    if isinstance(structures, SimState):
        yield from structures.to(device=device, dtype=dtype).split()
        return
    if isinstance(structures, ase.Atoms):
        structures = [structures]
    for item in structures:
        if isinstance(item, SimState):
            yield item.to(device=device, dtype=dtype)
        else:
            yield atoms_to_state(item, device=device, dtype=dtype)


def relax_structures(
    structures: Iterable[Any] | SimState,
    model: Any,
    *,
    fmax: float = 0.01,
    max_steps: int = 10_000,
    relax_cell: bool = False,
    pressure: float = 0.0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    max_memory_scaler: float | None = None,
    memory_scales_with: MemoryScaling = "n_atoms",
    fire: FireParameters = DEFAULT_FIRE,
    progress_every_s: float | None = 10.0,
    engine: str = "auto",
    workers: int | None = None,
) -> RelaxResult:
    """Relax structures with batched FIRE; return them in input order.

    Args:
        structures: ``ase.Atoms`` objects (a list or any iterable, read lazily),
            or a batched :class:`SimState`.
        model: a :mod:`chemfit_core.models` model (moved to ``device``/``dtype``).
        fmax: convergence threshold on the largest force, eV/Å (cell-DOF forces
            included under cell relaxation).
        max_steps: FIRE steps per structure at most; a structure that reaches it
            is returned with ``converged=False``.
        relax_cell: relax the cell too (ASE's UnitCellFilter), to ``pressure`` (eV/Å³).
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available.
        dtype: float64 (default) or float32.
        max_memory_scaler: batch budget in ``memory_scales_with`` units; default:
            probed on CUDA, a fixed atom budget on CPU.
        fire: FIRE's constants (ASE's defaults).
        progress_every_s: seconds between progress log lines (None: silent).
        engine: ``"torch"`` (batched FIRE, any device), ``"lammps"`` (LAMMPS workers,
            one per core; fixed cells, models with ``lammps_commands``) or ``"auto"``:
            LAMMPS on a CPU where it can, torch otherwise — the faster engine for the
            device (``bench/relax_throughput.py``).
        workers: LAMMPS processes (default: one per core).
    """
    if fmax <= 0:
        raise ValueError(f"fmax must be > 0 eV/Å, got {fmax}")
    if engine not in ("auto", "torch", "lammps"):
        raise ValueError(f"engine must be 'auto', 'torch' or 'lammps', got {engine!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lammps_possible = hasattr(model, "lammps_commands") and not relax_cell and not isinstance(structures, SimState)
    if engine == "lammps" and not lammps_possible:
        raise ValueError("the LAMMPS engine needs fixed cells, ase.Atoms input and a model LAMMPS can express")
    if engine == "lammps" or (engine == "auto" and device.type == "cpu" and lammps_possible):
        return _relax_lammps(list(structures), model, fmax, max_steps, workers, progress_every_s)
    model = model.to(device=device, dtype=dtype)
    batcher = InFlightAutoBatcher(
        model,
        memory_scales_with=memory_scales_with,
        max_memory_scaler=max_memory_scaler,
        max_iterations=max_steps + 1,  # evaluations: the first comes before any step
    )
    batcher.load_states(
        FireState.from_state(s, relax_cell=relax_cell, pressure=pressure) for s in _singles(structures, device, dtype)
    )
    start = last_report = time.monotonic()
    state, completed = batcher.next_batch(None, None)
    n_calls = 0
    while state is not None:
        fire_step(state, model, fire)
        n_calls += 1
        state, done = batcher.next_batch(state, state.converged(fmax))
        completed.extend(done)
        if progress_every_s is not None and time.monotonic() - last_report >= progress_every_s:
            last_report = time.monotonic()
            logger.info(
                "relax: %d structures done, %d in the batch, %d batched steps, %.1f structures/s",
                len(completed),
                0 if state is None else state.n_systems,
                n_calls,
                len(completed) / (last_report - start),
            )
    ordered: list[FireState] = batcher.restore_original_order(completed) if completed else []
    if not relax_cell and getattr(model, "compute_stress", True):
        _final_stress(ordered, model, batcher.max_memory_scaler, memory_scales_with)
    result = _collect(ordered, fmax, time.monotonic() - start, n_calls)
    result.device = str(device)
    if progress_every_s is not None:
        logger.info(
            "relax: %d structures in %.2f s (%d converged), %d batched force calls",
            result.n_structures,
            result.wall_time_s,
            int(result.converged.sum()),
            n_calls,
        )
    return result


def _final_stress(states: list[FireState], model: Any, budget: float | None, metric: MemoryScaling) -> None:
    """Stress at the final positions (FIRE at fixed cells does not need it along the way)."""
    from chemfit_core.engine.autobatching import BinningAutoBatcher

    if not states:
        return
    batcher = BinningAutoBatcher(model, memory_scales_with=metric, max_memory_scaler=budget)
    batcher.load_states(states)
    for batch, indices in batcher:
        stress = model(batch, compute_stress=True)["stress"].detach()
        for k, index in enumerate(indices):
            states[index].stress = stress[k : k + 1]


def _relax_lammps(
    structures: list[Any], model: Any, fmax: float, max_steps: int, workers: int | None, progress_every_s: float | None
) -> RelaxResult:
    from chemfit_core.engine.lammps_workers import relax_with_lammps

    relaxed, energies, steps, fmaxes, wall = relax_with_lammps(
        structures, model, fmax=fmax, max_steps=max_steps, workers=workers
    )
    converged = fmaxes <= fmax
    for atoms, ok, n, f in zip(relaxed, converged, steps, fmaxes):
        atoms.info.update({"relax_converged": bool(ok), "relax_steps": int(n), "relax_fmax": float(f)})
    if progress_every_s is not None:
        logger.info(
            "relax (LAMMPS workers): %d structures in %.2f s (%d converged)", len(relaxed), wall, int(converged.sum())
        )
    return RelaxResult(relaxed, energies, converged, steps, fmaxes, wall, 0, engine="lammps")


def _collect(states: Sequence[FireState], fmax: float, wall: float, n_calls: int) -> RelaxResult:
    from ase.calculators.singlepoint import SinglePointCalculator

    structures, energies, converged, steps, fmaxes = [], [], [], [], []
    for state in states:
        atoms = state.to_atoms()[0]
        final_fmax = float(max_force(state)[0])
        ok = final_fmax <= fmax
        stress = state.stress[0].detach().cpu().numpy() if state.stress is not None else None
        results = {"energy": float(state.energy[0]), "forces": state.forces.detach().cpu().numpy()}
        if stress is not None and np.isfinite(stress).all() and bool(state.pbc.all()):
            results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt, ASE order
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update({"relax_converged": ok, "relax_steps": int(state.n_steps[0]), "relax_fmax": final_fmax})
        structures.append(atoms)
        energies.append(results["energy"])
        converged.append(ok)
        steps.append(int(state.n_steps[0]))
        fmaxes.append(final_fmax)
    return RelaxResult(
        structures,
        np.array(energies),
        np.array(converged, dtype=bool),
        np.array(steps),
        np.array(fmaxes),
        wall,
        n_calls,
    )
