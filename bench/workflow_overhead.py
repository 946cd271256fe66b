"""Snakemake's share of a workflow run, and the relax rule against the engine called directly.

1. Runs the workflow on the default config (``--quick``: the test-sized config) in a
   fresh directory and reads Snakemake's own log: each job's end (``Finished jobid``)
   and, from the job's ``benchmark:`` file, how long its command ran. The union of those
   command intervals is the time spent in the science; the rest of the wall time
   (start-up, DAG, scheduling, launching scripts) is Snakemake's share.
2. For each M of ``--cells``, relaxes the same structures (the fitted argon model's
   ``perturbed`` set: M rattled 2×2×2 fcc cells, cells relaxed) three ways, interleaved:
   through the ``relax`` rule (``snakemake --forcerun relax``: Snakemake start-up, process
   start, imports and extxyz I/O included), through the rule's own command line without
   Snakemake (``python -m chemfit_core relax ...``), and by calling
   ``chemfit_core.engine.relax.relax_structures`` in this process (imports and I/O excluded, the
   headline's "direct"); prints the structures/s of each (best of the rounds, and medians)
   and the ratios. The rule's extra cost is mostly fixed per job (seconds), so the ratio
   grows with M.

Where SLURM's client tools are installed, every Snakemake start also runs ``scontrol show
config`` (the SLURM executor plugin does, at import, whatever the executor): instant with
a reachable controller, up to 10 s without one. The script prints how long it takes here.

Usage: python bench/workflow_overhead.py [--quick] [--cells 1024 4096] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from _workflow import ENV, run_directory, snakemake  # from the script's folder, bench/


def busy_time(workdir: Path) -> tuple[float, int]:
    """Union of the jobs' command intervals (s) from the latest Snakemake log and the benchmark files."""
    log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[-1].read_text().splitlines()
    benchmarks = {}
    for path in (workdir / "benchmarks").rglob("*.tsv"):
        benchmarks[str(path.relative_to(workdir))] = float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
    stamp, job_bench, intervals = None, {}, []
    current = None
    for line in log:
        match = re.match(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$", line.strip())
        if match:
            stamp = dt.datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
            continue
        if line.strip().startswith("jobid:"):
            current = int(line.split(":")[1])
        if line.strip().startswith("benchmark:") and current is not None:
            job_bench[current] = line.split(":", 1)[1].strip()
        finished = re.match(r"^Finished jobid: (\d+)", line.strip())
        if finished and stamp is not None:
            bench = job_bench.get(int(finished.group(1)))
            if bench in benchmarks:
                intervals.append((stamp - benchmarks[bench], stamp))
    intervals.sort()
    total, end = 0.0, -1e300
    for a, b in intervals:
        if b > end:
            total += b - max(a, end)
            end = b
    return total, len(intervals)


def relax_ratio(work: Path, cells: int, rounds: int) -> float:
    """Structures/s of the relax rule over the engine called directly, for ``cells`` cells."""
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["fits"]["argon"]["solid"]["perturbed_cells"] = cells
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/argon/solid/perturbed/relaxed.extxyz"
    snakemake(work, target)  # prepare the set (and the fit, the first time) once
    from ase.io import read

    from chemfit_core.engine.relax import relax_structures
    from chemfit_core.models.forms import fitted_form
    from chemfit_core.results import read_json
    from chemfit_core.stages.config import validate_config

    structures = read(work / "results" / "argon" / "solid" / "perturbed" / "initial.extxyz", index=":")
    form, fitted = fitted_form(read_json(work / "results" / "argon" / "params.json")["argon"])
    model = form.model(fitted)
    with contextlib.chdir(work):  # the config's files are relative to the run directory
        solid = validate_config(copy.deepcopy(config))["fits"]["argon"]["solid"]  # defaults filled
    fmax, device = solid["fmax"], solid["device"]
    command = [
        sys.executable,
        "-m",
        "chemfit_core",
        "relax",
        target.replace("relaxed", "initial"),
        "cli-relaxed.extxyz",
        "--fit-params",
        "results/argon/params.json",
        "--fit",
        "argon",
        "--relax-cell",
        "--fmax",
        str(fmax),
        "--device",
        device,
    ]  # the rule's command line (rules/relax.smk)
    rates: dict[str, list[float]] = {"rule": [], "cli": [], "direct": []}
    for _ in range(rounds):
        wall = snakemake(work, target, "--forcerun", "relax")
        rates["rule"].append(len(structures) / wall)
        start = time.perf_counter()
        subprocess.run(command, cwd=work, env=ENV, check=True, capture_output=True)
        rates["cli"].append(len(structures) / (time.perf_counter() - start))
        start = time.perf_counter()
        relax_structures(structures, model, fmax=fmax, relax_cell=True, progress_every_s=None)
        rates["direct"].append(len(structures) / (time.perf_counter() - start))
    # best of the rounds: on a shared machine noise only ever adds time (timeit's rule);
    # the medians are printed too
    best = {k: max(v) for k, v in rates.items()}
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"relax of {len(structures)} structures (cells relaxed), {rounds} interleaved rounds, structures/s, "
        f"best of each (medians): rule {best['rule']:.1f} ({median['rule']:.1f}), the rule's command without "
        f"Snakemake {best['cli']:.1f} ({median['cli']:.1f}), relax_structures in this process "
        f"{best['direct']:.1f} ({median['direct']:.1f})",
        flush=True,
    )
    for slower, faster, what in (
        ("rule", "direct", "rule/direct (goal >= 0.9)"),
        ("rule", "cli", "rule/command (Snakemake's own cost)"),
        ("cli", "direct", "command/direct (process, imports, extxyz I/O)"),
    ):
        extra = len(structures) / best[slower] - len(structures) / best[faster]
        print(
            f"  {what}: {best[slower] / best[faster]:.2f} (medians {median[slower] / median[faster]:.2f}), "
            f"{extra:.1f} s more",
            flush=True,
        )
    return best["rule"] / best["direct"]


def slurm_probe() -> None:
    """How long ``scontrol show config`` takes here (every Snakemake start runs it, see above)."""
    if shutil.which("scontrol") is None:
        print("SLURM client tools: not installed (Snakemake's SLURM plugin skips its probe)")
        return
    start = time.perf_counter()
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, timeout=30)
    print(
        f"SLURM client tools installed: `scontrol show config` took {time.perf_counter() - start:.1f} s "
        f"({'controller reachable' if done.returncode == 0 else 'no controller'}); every Snakemake start "
        "below pays it",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test-sized config instead of the default")
    parser.add_argument(
        "--cells",
        type=int,
        nargs="+",
        default=[1024, 4096],
        help="perturbed cells for the relax comparison (one comparison each)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = run_directory(args.quick, "chemfit-overhead-")
    slurm_probe()
    try:
        wall = snakemake(work)
        busy, jobs = busy_time(work)
        print(
            f"workflow ({'test-sized' if args.quick else 'default'} config), 2 cores: wall {wall:.1f} s, "
            f"{jobs} jobs' commands busy {busy:.1f} s -> Snakemake's share {100 * (1 - busy / wall):.1f} % "
            "(goal < 10 %; job timestamps have 1 s resolution)"
        )

        for cells in args.cells:
            relax_ratio(work, cells, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
