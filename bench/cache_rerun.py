"""Cache hit rate and time saved when a fit is run again: python bench/cache_rerun.py [--quick].

Runs the default config's workflow (``--quick``: the test-sized config) in a fresh
directory, then

1. forces the fit to run again (``snakemake --forcerun fit``, as after a kill or a lost
   result file): the evaluation cache (``work/<fit>/cache``) replays every evaluation;
2. doubles the ΔHvap denominator (ΔHvap counts a quarter as much) and fits again: the
   objective changed, so the evaluation cache misses, but every LAMMPS run the optimiser
   asks for again (same rendered input, seed and engine) is read from the run cache
   (``work/<fit>/cache/runs``): COBYQA's initial design does not depend on the objective,
   the steps after it do.

Prints hit rates and the fit jobs' times from their ``benchmark:`` files, measured in
the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import yaml
from _workflow import run_directory, snakemake  # from the script's folder, bench/


def run(workdir: Path, *args: str) -> float:
    """Run the workflow; return the fit job's time (s) from its benchmark file."""
    snakemake(workdir, *args)
    return float(pd.read_csv(workdir / "benchmarks" / "argon" / "fit.tsv", sep="\t")["s"].iloc[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test-sized config instead of the default")
    args = parser.parse_args()
    work = run_directory(args.quick, "chemfit-cache-")
    try:
        cold = run(work)
        warm = run(work, "--forcerun", "fit")
        record = json.loads((work / "results" / "argon" / "fit.json").read_text())
        hits, total = record["evaluations_replayed_from_cache"], record["n_evaluations"]
        print(
            f"{'test-sized' if args.quick else 'default'} config: fit job {cold:.1f} s cold, {warm:.1f} s from the "
            f"cache; hit rate {hits}/{total} = {100 * hits / total:.0f} %; time saved {cold - warm:.1f} s "
            f"({100 * (1 - warm / cold):.0f} %)"
        )

        config = yaml.safe_load((work / "config.yaml").read_text())
        config["fits"]["argon"]["liquid"]["state_points"][0]["hvap_kJ_mol"]["denominator"] *= 2
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        edited = run(work, "--forcerun", "fit")
        log = (work / "logs" / "argon" / "fit.log").read_text()
        read, ran = map(int, re.search(r"LAMMPS runs: (\d+) read from \S+, (\d+) run", log).groups())
        record = json.loads((work / "results" / "argon" / "fit.json").read_text())
        print(
            "ΔHvap denominator doubled (objective changed, evaluation cache "
            f"{record['evaluations_replayed_from_cache']}"
            f"/{record['n_evaluations']}): LAMMPS runs read from the run cache {read}/{read + ran} = "
            f"{100 * read / (read + ran):.0f} %; fit job {edited:.1f} s vs {cold:.1f} s cold"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
