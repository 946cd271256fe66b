"""What the workflow benches share: a fresh run directory and timed snakemake calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
TEST_CONFIG = REPO / ".test" / "config"  # the test-sized config, shared with tests/test_workflow.py


def run_directory(quick: bool, prefix: str) -> Path:
    """A temporary directory holding config.yaml: the default config, or the test-sized one
    (.test/config/config.yaml, with the structure file it names, vacancy.extxyz, beside it)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    if quick:
        for name in ("config.yaml", "vacancy.extxyz"):
            shutil.copy(TEST_CONFIG / name, work / name)
    else:
        shutil.copy(REPO / "config" / "config.yaml", work / "config.yaml")
    return work


def snakemake(workdir: Path, *args: str) -> float:
    """Run the workflow in ``workdir`` on 2 cores; return its wall time, s (exit on failure)."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml", "--cores", "2", *args],
        cwd=workdir,
        env=ENV,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"snakemake failed:\n{done.stderr[-3000:]}")
    return wall
