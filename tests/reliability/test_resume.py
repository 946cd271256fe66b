"""Kill a running fit with SIGKILL and resume it: the same optimum as an uninterrupted run.

Real processes are killed (``os.killpg`` with SIGKILL), at several points; the rerun
replays the evaluations the cache holds and computes only the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_processes import snakemake_command

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "tests" / "programs" / "resumable_fit.py"


def start(cache: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PROGRAM), str(cache), str(out)], start_new_session=True)


def kill_after(process: subprocess.Popen, cache: Path, n_cached: int, timeout: float = 120) -> int:
    """SIGKILL the process group once ``cache`` holds ``n_cached`` evaluations; return how many it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if cache.is_dir() and len(list(cache.glob("*.json"))) >= n_cached:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return len(list(cache.glob("*.json")))
        time.sleep(0.002)
    raise AssertionError(f"the fit ended before {n_cached} evaluations were cached")


def test_killed_fits_resume_to_the_uninterrupted_optimum(tmp_path):
    reference = tmp_path / "reference.json"
    assert start(tmp_path / "reference_cache", reference).wait(timeout=300) == 0
    expected = json.loads(reference.read_text())
    for point in (5, 40, 110):  # early, middle, late in the 150-evaluation fit
        cache, out = tmp_path / f"cache_{point}", tmp_path / f"resumed_{point}.json"
        held = kill_after(start(cache, out), cache, point)
        assert not out.exists()
        assert start(cache, out).wait(timeout=300) == 0
        resumed = json.loads(out.read_text())
        recomputed = resumed["n_evaluations"] - resumed["replayed"]
        print(
            f"killed after {held} cached evaluations: resumed run replayed {resumed['replayed']}, "
            f"recomputed {recomputed} of {resumed['n_evaluations']}"
        )
        assert resumed["replayed"] == held
        assert resumed["n_evaluations"] == expected["n_evaluations"]
        for name, value in expected["params"].items():
            assert resumed["params"][name] == pytest.approx(value, rel=1e-10, abs=1e-12)


def test_a_corrupt_cache_entry_is_recomputed_not_trusted(tmp_path):
    from chemfit_core.cache import EvaluationCache

    cache = EvaluationCache(tmp_path, "ns")
    cache.put({"a": 1.0}, {"objective": 2.0})
    assert cache.get({"a": 1.0}) == {"objective": 2.0}
    next(tmp_path.glob("*.json")).write_text('{"objective": 2.')  # as if cut off by a kill
    assert cache.get({"a": 1.0}) is None
    assert cache.get({"a": 1.0 + 1e-16}) is None  # keys are exact: no rounding
    assert cache.hits == 1 and cache.misses == 2


@pytest.mark.slow
def test_snakemake_fit_killed_mid_run_resumes_to_the_same_parameters(tmp_path, venv_env):
    """The workflow's fit job is SIGKILLed (with Snakemake) after two cached evaluations;
    `snakemake --unlock` and `snakemake` again replay the cached evaluations and give the
    params.json of an uninterrupted run."""

    plain, killed = tmp_path / "plain", tmp_path / "killed"
    for workdir in (plain, killed):
        workdir.mkdir()
        for name in ("config.yaml", "vacancy.extxyz"):  # the shared reduced config (.test/config/)
            shutil.copy(REPO / ".test" / "config" / name, workdir / name)
        config = yaml.safe_load((workdir / "config.yaml").read_text())
        config["fits"]["argon"]["optimizer"]["max_evaluations"] = 5
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(snakemake_command(), cwd=plain, env=venv_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    process = subprocess.Popen(
        snakemake_command(),
        cwd=killed,
        env=venv_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    held = kill_after(process, killed / "work" / "argon" / "cache", 2, timeout=300)
    assert not (killed / "results" / "argon" / "params.json").exists()
    # a killed Snakemake leaves its lock behind: `snakemake --unlock` is the documented first step
    unlock = subprocess.run(
        [*snakemake_command(), "--unlock"], cwd=killed, env=venv_env, capture_output=True, text=True
    )
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    done = subprocess.run(snakemake_command(), cwd=killed, env=venv_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((killed / "results" / "argon" / "fit.json").read_text())
    print(
        f"workflow killed with {held} cached evaluations; the rerun replayed "
        f"{record['evaluations_replayed_from_cache']} of {record['n_evaluations']}"
    )
    assert record["evaluations_replayed_from_cache"] >= held
    first = json.loads((plain / "results" / "argon" / "params.json").read_text())
    second = json.loads((killed / "results" / "argon" / "params.json").read_text())
    assert first == second


def test_a_structure_file_edited_in_place_starts_a_fresh_evaluation_cache(tmp_path):
    """The config names the file by path; the cache key holds its content, so replayed
    evaluations never come from the old reference data."""
    from chemfit_core.stages.fit import fit_cache

    data = tmp_path / "reference.extxyz"
    data.write_text("reference data, version 1\n")
    fit = {"structures": {"file": str(data)}, "parameters": {}}
    first = fit_cache("cu", fit, 7, None, tmp_path).namespace
    assert fit_cache("cu", fit, 7, None, tmp_path).namespace == first  # stable
    data.write_text("reference data, version 2\n")
    assert fit_cache("cu", fit, 7, None, tmp_path).namespace != first
