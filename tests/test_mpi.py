"""MPIWrapperCOB under a real `mpiexec -n 2` (MPICH from PyPI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = Path(__file__).parent / "programs" / "mpi_fit.py"


def mpiexec(venv_env, *args):
    command = [str(Path(sys.executable).parent / "mpiexec"), "-n", "2", sys.executable, str(PROGRAM), *args]
    return subprocess.run(command, capture_output=True, text=True, env=venv_env, timeout=120)


def test_fit_under_two_ranks_uses_both_and_matches_the_serial_objective(venv_env):
    done = mpiexec(venv_env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # minimum of sum_i w_i (x - c_i)^2: x = sum(w c)/sum(w) = (0 + 2 + 6 + 12)/10
    assert result["x"] == pytest.approx(2.0, abs=1e-5)
    assert result["mpi"] == pytest.approx(result["serial"], rel=1e-14)
    assert result["ranks"] == [0, 1]
    assert len(result["terms"]) == 4


def test_a_failing_term_on_a_worker_is_reported_and_every_rank_exits(venv_env):
    done = mpiexec(venv_env, "fail")  # the timeout of 120 s fails the test if a rank hangs
    assert done.returncode != 0
    error = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    assert "objective term 3 ('t3') failed" in error
    assert "blew up on rank 1" in error
