"""Cache hit rate and time saved when a fit is run again: python bench/cache_rerun.py [--quick].

Runs the default config's workflow (``--quick``: the test-sized config) in a fresh
directory, then forces the fit to run again (``snakemake --forcerun fit``, as after a
kill or a lost result file): the second run replays its evaluations from
``work/<fit>/cache``. Prints the hit rate and both fit jobs' times from their
``benchmark:`` files, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workflow import run_directory, snakemake  # noqa: E402


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
        print(f"{'test-sized' if args.quick else 'default'} config: fit job {cold:.1f} s cold, {warm:.1f} s from the "
              f"cache; hit rate {hits}/{total} = {100 * hits / total:.0f} %; time saved {cold - warm:.1f} s "
              f"({100 * (1 - warm / cold):.0f} %)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
