"""Relax many structures in batches: the entry point of the ``relax`` rule and of users.

:func:`relax_structures` streams structures through an
:class:`~chemfit_core.engine.autobatching.InFlightAutoBatcher` driving a batched
optimiser — FIRE (default), BFGS or L-BFGS (:mod:`chemfit_core.engine.optimizers`),
each ASE's algorithm per system, with the cell filter for cell relaxation: every
system is checked for convergence (largest force ≤ ``fmax``) after every force
evaluation, converged systems leave the batch at once and waiting ones take their
place. Results come back in input order with energies, forces, stresses and
convergence flags.

Any model with torch-sim's ``ModelInterface`` contract runs here (duck typed:
``model(state)`` returning ``energy``/``forces``/``stress``); one that fixes its own
``device``/``dtype`` is run where it is (see :func:`~chemfit_core.engine.placement.place_model`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from chemfit_core.engine.autobatching import InFlightAutoBatcher, MemoryScaling
from chemfit_core.engine.cell_filter import OptimState, call_model, max_force
from chemfit_core.engine.fire import FIRE_FLAVORS, Fire2Parameters, FireParameters
from chemfit_core.engine.optimizers import OPTIM_REGISTRY, OPTIMIZER_OPTIONS, STATE_TYPES, Optimizer
from chemfit_core.engine.optimizers import optimizer as find_optimizer
from chemfit_core.engine.placement import place_model
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
    n_steps: np.ndarray  # optimiser steps taken
    fmax: np.ndarray  # final largest force, eV/Å
    wall_time_s: float
    n_force_calls: int  # batched model evaluations (torch engine)
    engine: str = "torch"
    device: str = "cpu"  # where the torch engine ran ("cpu", "cuda", "cuda:1"); LAMMPS workers: "cpu"
    errors: list[str | None] = dataclasses.field(default_factory=list)  # per structure: why it failed, or None

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


@torch.no_grad()  # a relaxation needs forces, never a graph: models evaluate in blocks, in place
def relax_structures(
    structures: Iterable[Any] | SimState,
    model: Any,
    *,
    fmax: float = 0.01,
    max_steps: int = 10_000,
    relax_cell: bool = False,
    pressure: float = 0.0,
    cell_factor: float | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    max_memory_scaler: float | None = None,
    memory_scales_with: MemoryScaling = "n_atoms",
    fire: FireParameters | Fire2Parameters = DEFAULT_FIRE,
    fire_flavor: str | None = None,
    progress_every_s: float | None = 10.0,
    engine: str = "auto",
    workers: int | None = None,
    optimizer: Optimizer | str = "fire",
    optimizer_options: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> RelaxResult:
    """Relax structures with batched FIRE (or BFGS, L-BFGS); return them in input order.

    Args:
        structures: ``ase.Atoms`` objects (a list or any iterable, read lazily),
            or a batched :class:`SimState`.
        model: a :mod:`chemfit_core.models` model (moved to ``device``/``dtype``) or any
            model with torch-sim's ``ModelInterface`` contract.
        fmax: convergence threshold on the largest force, eV/Å (cell-DOF forces
            included under cell relaxation).
        max_steps: optimiser steps per structure at most; a structure that reaches it
            is returned with ``converged=False``.
        relax_cell: relax the cell too (ASE's UnitCellFilter), to ``pressure`` (eV/Å³).
        cell_factor: the cell filter's scale (Å): the cell's degrees of freedom are
            ``cell_factor · F`` and their forces the virial / ``cell_factor`` (eV/Å), held to
            ``fmax`` like the atoms'. Default: each structure's number of atoms N (ASE's and
            torch-sim's), whose steps grow with N (a strain takes ~N/20 steps to undo);
            for cells of more than a few thousand atoms give about ``√N · (V/N)^(1/3)``,
            which makes the cell as stiff as an atom: the steps then grow as √N, as a fixed
            cell's do under ASE's FIRE (60 / 178 / 618 at 10⁴ / 10⁵ / 10⁶ atoms), and the stress
            is held to fmax·cell_factor/V. See bench/README.md (``relax_scaling.py``).
        device: ``"cpu"``, ``"cuda"``...; default: CUDA when available (or where a model
            that fixes its device is).
        dtype: float64 (default, or a fixed-dtype model's) or float32.
        max_memory_scaler: batch budget in ``memory_scales_with`` units; default:
            probed on CUDA, a fixed atom budget on CPU.
        fire: FIRE's constants: :class:`FireParameters` (ASE's flavour, its defaults) or
            :class:`~chemfit_core.engine.fire.Fire2Parameters` (FIRE 2.0, LAMMPS's ``min_style fire``).
        fire_flavor: ``"ase_fire"`` (default) or ``"fire2"`` (fixed cells; its defaults unless
            ``fire`` gives Fire2Parameters). See bench/README.md (``relax_scaling.py``) for
            the step counts of both.
        progress_every_s: seconds between progress log lines (None: silent).
        engine: ``"torch"`` (batched FIRE, any device), ``"lammps"`` (LAMMPS workers,
            one per core; fixed cells, models with ``lammps_commands``) or ``"auto"``:
            LAMMPS on a CPU where it can, torch otherwise — the faster engine for the
            device (``bench/relax_throughput.py``).
        workers: LAMMPS processes (default: one per core).
        optimizer: ``"fire"`` (default), ``"bfgs"`` or ``"lbfgs"`` (ASE's algorithms, torch
            engine; ``"auto"`` then means torch).
        optimizer_options: BFGS: ``alpha`` (eV/Å², 70), ``max_step`` (Å, 0.2); L-BFGS: these
            and ``step_size`` (damping, 1), ``max_history`` (memory, 100).
        threads: intra-op threads the torch engine uses on a CPU while it runs
            (``torch.set_num_threads``; restored afterwards); default: torch's setting.
            One large structure is evaluated by all of them in one process (larger pair
            blocks, :func:`~chemfit_core.engine.neighbors.pair_block_size`); it is never
            split across processes. LAMMPS workers are one single-threaded process each.
    """
    if not (math.isfinite(fmax) and fmax > 0):
        raise ValueError(f"fmax must be a finite number > 0 eV/Å, got {fmax}")
    if engine not in ("auto", "torch", "lammps"):
        raise ValueError(f"engine must be 'auto', 'torch' or 'lammps', got {engine!r}")
    if cell_factor is not None and not (math.isfinite(cell_factor) and cell_factor > 0):
        raise ValueError(f"cell_factor must be a finite number > 0 Å, got {cell_factor}")
    if cell_factor is not None and not relax_cell:
        raise ValueError("cell_factor scales the cell filter: it needs relax_cell=True")
    method = find_optimizer(optimizer)
    fire = _fire_parameters(fire, fire_flavor, relax_cell)
    options = dict(optimizer_options or {})
    unknown = set(options) - set(OPTIMIZER_OPTIONS[method])
    if unknown:
        raise ValueError(f"{method.value} takes the options {list(OPTIMIZER_OPTIONS[method])}, not {sorted(unknown)}")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lammps_possible = (
        hasattr(model, "lammps_commands")
        and not relax_cell
        and not isinstance(structures, SimState)
        and method is Optimizer.fire
    )
    if engine == "lammps" and not lammps_possible:
        raise ValueError("the LAMMPS engine needs FIRE, fixed cells, ase.Atoms input and a model LAMMPS can express")
    if engine == "lammps" or (engine == "auto" and target.type == "cpu" and lammps_possible):
        return _relax_lammps(list(structures), model, fmax, max_steps, workers, progress_every_s)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        settings = _TorchRelax(
            fmax,
            max_steps,
            relax_cell,
            pressure,
            max_memory_scaler,
            memory_scales_with,
            fire,
            method,
            options,
            cell_factor=cell_factor,
        )
        return _relax_torch(structures, model, device, dtype, settings, progress_every_s)
    finally:
        torch.set_num_threads(previous_threads)


@dataclasses.dataclass(frozen=True)
class _TorchRelax:
    """What the torch engine's loop is asked to do (checked by :func:`relax_structures`)."""

    fmax: float  # eV/Å
    max_steps: int
    relax_cell: bool
    pressure: float  # eV/Å³
    max_memory_scaler: float | None
    memory_scales_with: MemoryScaling
    fire: FireParameters | Fire2Parameters
    method: Optimizer
    options: Mapping[str, Any]
    cell_factor: float | None = None  # Å; None: each structure's number of atoms


def _relax_torch(
    structures: Iterable[Any] | SimState,
    model: Any,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    settings: _TorchRelax,
    progress_every_s: float | None,
) -> RelaxResult:
    """The torch engine's loop (see :func:`relax_structures`)."""
    model, device, dtype = place_model(model, device, dtype)
    method, fmax, relax_cell = settings.method, settings.fmax, settings.relax_cell
    state_type, step = STATE_TYPES[method], OPTIM_REGISTRY[method][1]
    step_args = (settings.fire,) if method is Optimizer.fire else ()
    batcher = InFlightAutoBatcher(
        model,
        memory_scales_with=settings.memory_scales_with,
        max_memory_scaler=settings.max_memory_scaler,
        max_iterations=settings.max_steps + 1,  # evaluations: the first comes before any step
    )
    cell = {"cell_factor": settings.cell_factor} if settings.cell_factor is not None else {}
    batcher.load_states(
        state_type.from_state(s, relax_cell=relax_cell, pressure=settings.pressure, **cell, **settings.options)
        for s in _singles(structures, device, dtype)
    )
    start = last_report = time.monotonic()
    state, completed = batcher.next_batch(None, None)
    n_calls = 0
    while state is not None:
        step(state, model, *step_args)
        n_calls += 1
        state, done = batcher.next_batch(state, state.converged(fmax) | _broken(state))  # broken: out at once
        for finished in done:
            finished.drop_optimizer_memory()
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
    ordered: list[OptimState] = batcher.restore_original_order(completed) if completed else []
    if not relax_cell and getattr(model, "compute_stress", True):
        _final_stress(ordered, model, batcher.max_memory_scaler, settings.memory_scales_with)
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


def _fire_parameters(
    fire: FireParameters | Fire2Parameters, flavor: str | None, relax_cell: bool
) -> FireParameters | Fire2Parameters:
    """The FIRE constants ``fire_flavor`` asks for, checked against ``fire`` and ``relax_cell``."""
    if flavor is not None:
        if flavor not in FIRE_FLAVORS:
            raise ValueError(f"fire_flavor must be one of {sorted(FIRE_FLAVORS)}, got {flavor!r}")
        kind = FIRE_FLAVORS[flavor]
        if not isinstance(fire, kind):
            if fire is not DEFAULT_FIRE:
                raise ValueError(f"fire_flavor={flavor!r} does not match fire={type(fire).__name__}(...)")
            fire = kind()
    if relax_cell and isinstance(fire, Fire2Parameters):
        raise ValueError("fire_flavor='fire2' relaxes fixed cells; relax cells with fire_flavor='ase_fire'")
    return fire


def _final_stress(states: list[OptimState], model: Any, budget: float | None, metric: MemoryScaling) -> None:
    """Stress at the final positions (FIRE at fixed cells does not need it along the way)."""
    from chemfit_core.engine.autobatching import BinningAutoBatcher

    if not states:
        return
    batcher = BinningAutoBatcher(model, memory_scales_with=metric, max_memory_scaler=budget)
    batcher.load_states(states)
    for batch, indices in batcher:
        stress = call_model(model, batch, compute_stress=True).get("stress")
        if stress is None:
            return
        stress = stress.detach()
        for k, index in enumerate(indices):
            states[index].stress = stress[k : k + 1]


def _relax_lammps(
    structures: list[Any], model: Any, fmax: float, max_steps: int, workers: int | None, progress_every_s: float | None
) -> RelaxResult:
    from chemfit_core.engine.lammps_workers import relax_with_lammps

    relaxed, energies, steps, fmaxes, wall = relax_with_lammps(
        structures, model, fmax=fmax, max_steps=max_steps, workers=workers
    )
    errors = [
        _nonfinite_error(energy, atoms.positions, _forces_of(atoms), None) for atoms, energy in zip(relaxed, energies)
    ]
    converged = (fmaxes <= fmax) & np.array([e is None for e in errors], dtype=bool)
    for atoms, ok, n, f, error in zip(relaxed, converged, steps, fmaxes, errors):
        atoms.info.update({"relax_converged": bool(ok), "relax_steps": int(n), "relax_fmax": float(f)})
        if error is not None:
            atoms.info["relax_error"] = error
    if progress_every_s is not None:
        logger.info(
            "relax (LAMMPS workers): %d structures in %.2f s (%d converged)", len(relaxed), wall, int(converged.sum())
        )
    return RelaxResult(relaxed, energies, converged, steps, fmaxes, wall, 0, engine="lammps", errors=errors)


def _broken(state: OptimState) -> torch.Tensor:
    """``[n_systems]``: evaluated systems whose energy, forces or positions are not finite (NaN
    after two atoms met, say); they leave the batch at once and are reported, not relaxed on."""
    if state.n_systems == 1:  # whole-tensor tests: row tests on a model's transposed force buffer are slow
        bad = ~(torch.isfinite(state.forces).all() & torch.isfinite(state.positions).all()).view(1)
    else:
        bad_atoms = ~(torch.isfinite(state.forces).all(dim=1) & torch.isfinite(state.positions).all(dim=1))
        per_system = torch.zeros(state.n_systems, dtype=torch.long, device=state.device)
        per_system.index_add_(0, state.system_idx, bad_atoms.long())
        bad = per_system > 0
    bad = bad | ~torch.isfinite(state.energy)
    if state.relax_cell and state.cell_forces is not None:
        bad |= ~torch.isfinite(state.cell_forces).flatten(1).all(dim=1)
    return bad & state.evaluated


def _forces_of(atoms: Any) -> np.ndarray | None:
    results = atoms.calc.results if atoms.calc is not None else {}
    return results.get("forces")


def _nonfinite_error(energy: float, positions: Any, forces: Any, stress: Any) -> str | None:
    """Why a relaxed structure is not a result (non-finite energy, forces, stress or positions), or None."""
    bad = [
        name
        for name, value in (("energy", energy), ("positions", positions), ("forces", forces), ("stress", stress))
        if value is not None and not np.isfinite(np.asarray(value, dtype=float)).all()
    ]
    if not bad:
        return None
    return (
        f"non-finite {', '.join(bad)} (NaN or inf: the model failed here, e.g. on atoms too close together); "
        "not converged"
    )


def _collect(states: Sequence[OptimState], fmax: float, wall: float, n_calls: int) -> RelaxResult:
    from ase.calculators.singlepoint import SinglePointCalculator

    structures, energies, converged, steps, fmaxes, errors = [], [], [], [], [], []
    for state in states:
        atoms = state.to_atoms()[0]
        final_fmax = float(max_force(state)[0])
        stress = state.stress[0].detach().cpu().numpy() if state.stress is not None else None
        results = {"energy": float(state.energy[0]), "forces": state.forces.detach().cpu().numpy()}
        periodic = bool(state.system_pbc.all())
        computed = stress is not None and periodic and not np.isnan(stress).all()  # all NaN: not computed
        stress_checked = stress if computed else None
        error = _nonfinite_error(results["energy"], atoms.positions, results["forces"], stress_checked)
        ok = final_fmax <= fmax and error is None
        if stress is not None and np.isfinite(stress).all() and periodic:
            results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt, ASE order
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update({"relax_converged": ok, "relax_steps": int(state.n_steps[0]), "relax_fmax": final_fmax})
        if error is not None:
            atoms.info["relax_error"] = error
        errors.append(error)
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
        errors=errors,
    )
