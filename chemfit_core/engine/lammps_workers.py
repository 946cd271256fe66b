"""Relaxation by LAMMPS workers: the fastest engine on a CPU for models LAMMPS has.

On a CPU, compiled LAMMPS relaxes small cells faster than batched torch can
(see ``bench/relax_throughput.py``), so :func:`~chemfit_core.engine.relax.relax_structures`
hands models that LAMMPS can express (``model.lammps_commands``) to one LAMMPS
process per core. Each process relaxes its share of the structures one after
another in a single run (``clear`` / ``read_data`` per structure), with LAMMPS's
FIRE (``min_style fire``) and the same convergence criterion as the torch engine:
the largest per-atom force norm (``min_modify norm max``) at most ``fmax``.

LAMMPS's FIRE is FIRE 2.0 (Guénolé et al. 2020), not ASE's flavour, so its
paths and step counts differ; the minima agree (checked in the tests). Cell
relaxation is not available this way (LAMMPS's FIRE cannot drive
``fix box/relax``); it always runs in torch.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.errors import ChemFitError
from chemfit_core.external.lammps import run_lammps


def _species_order(structures: Sequence[Any], model: Any) -> list[str]:
    from ase.data import chemical_symbols

    present = {int(z) for atoms in structures for z in atoms.numbers}
    order = [chemical_symbols[z] for z in model.species]
    missing = sorted(present - set(model.species))
    if missing:
        raise ValueError(f"{type(model).__name__} has no parameters for atomic numbers {missing}")
    return order


def _input_block(k: int, atoms: Any, commands: list[str], fmax: float, max_steps: int) -> str:
    boundary = " ".join("p" if periodic else "s" for periodic in atoms.pbc)
    lines = [
        "clear",
        "units metal",
        "atom_style atomic",
        f"boundary {boundary}",
        f"read_data s{k}.data",
        *commands,
        "thermo_style custom step pe fmax",
        "thermo_modify format float %20.15g",
        "min_style fire",
        "min_modify norm max",
        f"minimize 0 {fmax!r} {max_steps} {10 * max_steps + 100}",
        f"write_dump all custom f{k}.dump id x y z fx fy fz modify sort id format float %20.15g",
        f'print "RESULT {k} $(pe:%.15g) $(step)"',
    ]
    return "\n".join(lines) + "\n"


def _read_dump(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    data = np.array([[float(v) for v in line.split()] for line in lines[start:]])
    return data[:, 1:4], data[:, 4:7]


def _run_chunk(
    chunk: list[tuple[int, Any]],
    species: list[str],
    commands: list[str],
    fmax: float,
    max_steps: int,
    workdir: Path,
    timeout: float | None,
) -> dict[int, tuple[float, int, np.ndarray, np.ndarray]]:
    from ase.calculators.lammps import Prism
    from ase.io import write

    script = []
    for k, atoms in chunk:
        write(workdir / f"s{k}.data", atoms, format="lammps-data", specorder=species, masses=True, atom_style="atomic")
        script.append(_input_block(k, atoms, commands, fmax, max_steps))
    (workdir / "in.lammps").write_text("".join(script))
    log = run_lammps(workdir, "in.lammps", timeout=timeout)
    results: dict[int, tuple[float, int, np.ndarray, np.ndarray]] = {}
    for line in log.read_text().splitlines():
        if line.startswith("RESULT "):
            _, k, energy, steps = line.split()
            results[int(k)] = (float(energy), int(steps))  # type: ignore[assignment]
    out = {}
    for k, atoms in chunk:
        if k not in results:
            raise ChemFitError(f"LAMMPS did not report structure {k} (work directory {workdir})")
        positions, forces = _read_dump(workdir / f"f{k}.dump")
        prism = Prism(atoms.cell.array, atoms.pbc)
        energy, steps = results[k]
        out[k] = (energy, steps, prism.vector_to_ase(positions, wrap=False), prism.vector_to_ase(forces))
    return out


def relax_with_lammps(
    structures: Sequence[Any],
    model: Any,
    *,
    fmax: float = 0.01,
    max_steps: int = 10_000,
    workers: int | None = None,
    timeout: float | None = None,
) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray, float]:
    """Relax fixed-cell structures with LAMMPS workers.

    Returns (relaxed Atoms with single-point results, energies eV, steps, largest
    force per structure eV/Å, wall time s); order as given.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    species = _species_order(structures, model)
    commands = model.lammps_commands(species)
    n_workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(structures)))
    # balance by atom count: largest first, each to the least loaded worker
    chunks: list[list[tuple[int, Any]]] = [[] for _ in range(n_workers)]
    loads = [0] * n_workers
    for k in sorted(range(len(structures)), key=lambda i: -len(structures[i])):
        w = loads.index(min(loads))
        chunks[w].append((k, structures[k]))
        loads[w] += len(structures[k])
    start = time.monotonic()
    results: dict[int, tuple[float, int, np.ndarray, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="chemfit-lammps-relax-") as tmp:
        dirs = [Path(tmp) / f"worker{w}" for w in range(n_workers)]
        for d in dirs:
            d.mkdir()
        with ThreadPoolExecutor(n_workers) as pool:
            futures = [
                pool.submit(_run_chunk, chunk, species, commands, fmax, max_steps, d, timeout)
                for chunk, d in zip(chunks, dirs)
                if chunk
            ]
            for future in futures:
                results.update(future.result())
    wall = time.monotonic() - start
    relaxed, energies, steps, fmaxes = [], [], [], []
    for k, original in enumerate(structures):
        energy, n_steps, positions, forces = results[k]
        atoms = original.copy()
        atoms.positions = positions
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        relaxed.append(atoms)
        energies.append(energy)
        steps.append(n_steps)
        fmaxes.append(float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0)
    return relaxed, np.array(energies), np.array(steps), np.array(fmaxes), wall
