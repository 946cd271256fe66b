"""Overhead of AsyncWrapperCOB against ChemFit 3.1.1's ExecutorWrapperCOB, side by side.

Prints, from one run on this machine:

1. wall time per term of one evaluation of 1, 16 and 256 trivial terms, for
   - both wrappers as constructed by default (no executor given; ChemFit then
     makes a new thread pool per call, ours keeps one), and
   - both wrappers given the same ``ThreadPoolExecutor(8)``,
   next to the serial ``CombinedObjectiveFunction`` of each package;
2. wall time of 32 terms that each block 20 ms, with 8 and 32 workers, as a
   fraction of the ideal (80 ms and 20 ms).

Variants are measured in interleaved rounds and the median round is reported, so
the drift of a shared machine hits all of them alike. ChemFit 3.1.1 is installed
for this script only, into ``bench/.chemfit-3.1.1`` (``--no-deps``: the wrapper
modules need nothing beyond the standard library and typing_extensions).

Usage: python bench/async_overhead.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHEMFIT_DIR = HERE / ".chemfit-3.1.1"


def import_chemfit():
    if not (CHEMFIT_DIR / "chemfit").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(CHEMFIT_DIR), "chemfit==3.1.1"],
            check=True,
        )
    sys.path.insert(0, str(CHEMFIT_DIR))
    from chemfit.combined_objective_function import CombinedObjectiveFunction
    from chemfit.executor_wrapper_cob import ExecutorWrapperCOB

    return CombinedObjectiveFunction, ExecutorWrapperCOB


def per_term_us(func, n_terms: int, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        func({"x": 1.0})
    return (time.perf_counter() - start) / calls / n_terms * 1e6


def trivial_terms(n: int):
    return [lambda p, i=i: p["x"] * i for i in range(n)]


def blocking_terms(n: int, seconds: float):
    def term(p):
        time.sleep(seconds)
        return p["x"]

    return [term] * n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    CFCombined, CFExecutorWrapper = import_chemfit()
    from chemfit_core import AsyncWrapperCOB, CombinedObjectiveFunction

    print(f"Python {sys.version.split()[0]}, {args.rounds} interleaved rounds, median shown")
    print("\n1) wall time per term of one evaluation, trivial terms (µs)")
    header = (
        f"{'terms':>6} | {'ours dflt':>9} {'ChemFit dflt':>12} {'ratio':>6} | "
        f"{'ours pool8':>10} {'ChemFit pool8':>13} {'ratio':>6} | {'serial ours':>11} {'ChemFit':>8}"
    )
    print(header)
    print("-" * len(header))
    shared_pool = ThreadPoolExecutor(8)
    for n in (1, 16, 256):
        calls = max(20, 3000 // n)
        ours_cob = CombinedObjectiveFunction(trivial_terms(n))
        theirs_cob = CFCombined(trivial_terms(n))
        variants = {
            "ours_default": AsyncWrapperCOB(ours_cob),
            "chemfit_default": CFExecutorWrapper(theirs_cob),
            "ours_pool": AsyncWrapperCOB(ours_cob, executor=shared_pool),
            "chemfit_pool": CFExecutorWrapper(theirs_cob, executor=shared_pool),
            "serial_ours": ours_cob,
            "serial_chemfit": theirs_cob,
        }
        for func in variants.values():  # warm up pools and caches
            func({"x": 1.0})
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, func in variants.items():
                samples[name].append(per_term_us(func, n, calls))
        med = {name: statistics.median(values) for name, values in samples.items()}
        print(
            f"{n:>6} | {med['ours_default']:>9.1f} {med['chemfit_default']:>12.1f} "
            f"{med['ours_default'] / med['chemfit_default']:>6.2f} | "
            f"{med['ours_pool']:>10.1f} {med['chemfit_pool']:>13.1f} "
            f"{med['ours_pool'] / med['chemfit_pool']:>6.2f} | "
            f"{med['serial_ours']:>11.1f} {med['serial_chemfit']:>8.1f}"
        )
        variants["ours_default"].close()

    print("\n2) 32 terms blocking 20 ms each: wall time and fraction of the ideal")
    print(f"{'workers':>8} {'ideal ms':>9} | {'ours ms':>8} {'eff':>6} | {'ChemFit ms':>10} {'eff':>6}")
    for workers in (8, 32):
        ideal_ms = 32 * 20.0 / workers
        pool = ThreadPoolExecutor(workers)
        ours = AsyncWrapperCOB(CombinedObjectiveFunction(blocking_terms(32, 0.02)), executor=pool)
        theirs = CFExecutorWrapper(CFCombined(blocking_terms(32, 0.02)), executor=pool)
        ours({"x": 1.0})
        theirs({"x": 1.0})
        walls: dict[str, list[float]] = {"ours": [], "theirs": []}
        for _ in range(args.rounds):
            for name, func in (("ours", ours), ("theirs", theirs)):
                start = time.perf_counter()
                func({"x": 1.0})
                walls[name].append((time.perf_counter() - start) * 1e3)
        o, t = statistics.median(walls["ours"]), statistics.median(walls["theirs"])
        print(f"{workers:>8} {ideal_ms:>9.1f} | {o:>8.1f} {ideal_ms / o:>6.1%} | {t:>10.1f} {ideal_ms / t:>6.1%}")
        pool.shutdown()
    shared_pool.shutdown()


if __name__ == "__main__":
    main()
