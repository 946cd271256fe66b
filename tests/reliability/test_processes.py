"""External processes die with the fit that started them, however it ends — with real processes.

The fast tests run a small fit-like program (two commands started from a thread pool by
``run_command``, as the fit's terms are) and kill it: with SIGKILL, with SIGINT or SIGTERM to
its process group, or by killing its parent. The slow test does the same to a real Snakemake
run of the reduced test configuration while its LAMMPS runs are in flight, and checks that
``snakemake --unlock`` and a rerun give the params.json of an uninterrupted run.

A process "of a run" is one whose working directory or command line lies under the run's
temporary directory; zombies (dead, not yet reaped) do not count.
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

import psutil
import pytest
import yaml

from chemfit_core.errors import CommandCancelled
from chemfit_core.external.process import resume_commands, run_command, stop_all_commands

REPO = Path(__file__).resolve().parents[2]

# A fit in miniature: two commands run at once from worker threads, the main thread waiting.
FIT_LIKE = r"""
import contextlib, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from chemfit_core.external.process import exit_with_parent, run_command, stop_commands_on_signals

mode, root, command = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]

def run(k):
    workdir = root / f"run{k}"
    workdir.mkdir()
    run_command(command, workdir, timeout=600)

handled = stop_commands_on_signals(grace_s=1.0) if mode != "bare" else contextlib.nullcontext()
with handled:
    if mode == "watch":
        exit_with_parent(poll_s=0.1, grace_s=1.0)
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(run, k) for k in range(2)]:
            future.result()
"""

# The parent of a fit (Snakemake's role): starts it in its own process group and waits.
PARENT = r"""
import subprocess, sys
subprocess.run(sys.argv[1:])
"""

SLEEP = ["sleep", "300"]
STUBBORN = [  # ignores the signals a fit forwards: only SIGKILL ends it
    sys.executable,
    "-c",
    "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.signal(signal.SIGINT, signal.SIG_IGN); pathlib.Path('ignoring').touch(); time.sleep(300)",
]


def processes_under(root: Path) -> list[str]:
    """Live processes whose working directory or command line is under ``root`` (not this one)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            cwd = process.cwd()
        except (psutil.Error, OSError):
            cwd = ""
        command = " ".join(process.info["cmdline"] or [])
        if cwd.startswith(str(root)) or str(root) in command:
            found.append(f"{process.pid} {command[:200]} (in {cwd})")
    return found


def wait_for(condition, timeout: float, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    return condition()


def left_after(root: Path, timeout: float) -> list[str]:
    """What still runs under ``root`` once ``timeout`` seconds have passed or nothing is left."""
    deadline = time.monotonic() + timeout
    while (left := processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def start_fit_like(tmp_path: Path, mode: str, command=SLEEP) -> tuple[subprocess.Popen, Path]:
    root = tmp_path / "runs"
    root.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", FIT_LIKE, mode, str(root), *command],
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = wait_for(lambda: len(processes_under(root / "run0") + processes_under(root / "run1")) >= 2, 30)
    assert started, f"the commands did not start: {process.stderr.read() if process.poll() is not None else ''}"
    return process, root


def test_commands_die_with_a_fit_that_is_killed_outright(tmp_path):
    """kill -9 of the fit: its thread that waited for a command is gone, the kernel's
    parent-death signal kills the command (its own time limit died with the fit)."""
    fit, root = start_fit_like(tmp_path, "bare")
    os.killpg(fit.pid, signal.SIGKILL)  # the fit's group: the commands run in groups of their own
    fit.wait()
    assert left_after(root, 3.0) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_stop_the_commands_and_then_the_fit(tmp_path, sig):
    """Ctrl-C (SIGINT to the group) or SIGTERM: forwarded to the commands' groups; the fit does
    not wait for its in-flight commands' time limits (600 s here) but exits in seconds."""
    fit, root = start_fit_like(tmp_path, "signals")
    start = time.monotonic()
    os.killpg(fit.pid, sig)
    fit.wait(timeout=10)
    assert time.monotonic() - start < 5
    assert fit.returncode != 0
    assert left_after(root, 2.0) == []
    stderr = fit.stderr.read()
    assert f"received {signal.Signals(sig).name}" in stderr, stderr[-2000:]
    assert "KeyboardInterrupt" in stderr if sig == signal.SIGINT else fit.returncode == 128 + sig


def test_a_command_that_ignores_the_forwarded_signal_is_killed_after_the_grace_period(tmp_path):
    fit, root = start_fit_like(tmp_path, "signals", STUBBORN)
    assert wait_for(lambda: all((root / f"run{k}" / "ignoring").exists() for k in range(2)), 30)
    start = time.monotonic()
    os.killpg(fit.pid, signal.SIGTERM)
    fit.wait(timeout=10)
    assert time.monotonic() - start < 5  # grace_s is 1 s in FIT_LIKE
    assert left_after(root, 2.0) == []
    assert "(2 needed SIGKILL)" in fit.stderr.read()


def test_a_fit_whose_parent_is_killed_stops_its_commands_and_exits(tmp_path):
    """kill -9 of the parent alone (Snakemake's PID): the fit notices, stops its commands, exits."""
    root = tmp_path / "runs"
    root.mkdir()
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, sys.executable, "-c", FIT_LIKE, "watch", str(root), *SLEEP],
        start_new_session=True,
    )
    assert wait_for(lambda: len(processes_under(root / "run0") + processes_under(root / "run1")) >= 2, 30)
    parent.kill()  # the parent only: the fit, in the parent's group, stays alive until it notices
    parent.wait()
    assert left_after(root, 5.0) == []


def test_no_command_starts_while_the_running_ones_are_being_stopped(tmp_path):
    stop_all_commands("a test stops everything")
    try:
        with pytest.raises(CommandCancelled, match="a test stops everything"):
            run_command(["true"], tmp_path, timeout=10)
    finally:
        resume_commands()
    run_command(["true"], tmp_path, timeout=10)  # allowed again


# -- the workflow ----------------------------------------------------------------------------------
def snakemake_command(*extra: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        "--cores",
        "2",
        "results/argon/params.json",
        *extra,
    ]


def run_directory(tmp_path: Path, name: str) -> Path:
    """The reduced test config, its LAMMPS runs lengthened to seconds each (to be killed mid-run)."""
    workdir = tmp_path / name
    workdir.mkdir()
    for file in ("config.yaml", "vacancy.extxyz"):
        shutil.copy(REPO / ".test" / "config" / file, workdir / file)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["fits"]["argon"]["liquid"]["md"]["production_steps"] = 40_000
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def lammps_runs_under(root: Path) -> list[str]:
    return [p for p in processes_under(root / "work") if "lammps" in p and "lmp" in p]


@pytest.mark.slow
def test_a_workflow_killed_or_interrupted_mid_lammps_leaves_nothing_running_and_resumes(tmp_path, venv_env):
    """Snakemake is killed while the fit's LAMMPS runs are in flight: kill -9 of its process group,
    kill -9 of its PID alone, SIGINT to its group (Ctrl-C). Within seconds no process of the run
    is left; after the group kill, `snakemake --unlock` and a rerun give the params.json of an
    uninterrupted run."""
    plain = run_directory(tmp_path, "plain")
    done = subprocess.run(snakemake_command(), cwd=plain, env=venv_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    how = {
        "kill -9 of the group": lambda pid: os.killpg(pid, signal.SIGKILL),
        "kill -9 of snakemake alone": lambda pid: os.kill(pid, signal.SIGKILL),
        "SIGINT to the group": lambda pid: os.killpg(pid, signal.SIGINT),
    }
    for k, (label, kill) in enumerate(how.items()):
        workdir = run_directory(tmp_path, f"killed{k}")
        snakemake = subprocess.Popen(
            snakemake_command(),
            cwd=workdir,
            env=venv_env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(lambda w=workdir: len(lammps_runs_under(w)) >= 2, 120, poll=0.2), f"{label}: no LAMMPS run"
        time.sleep(0.5)
        kill(snakemake.pid)
        left = left_after(workdir, 10.0)
        assert left == [], f"{label}: still running 10 s later:\n" + "\n".join(left)
        snakemake.wait(timeout=10)
        assert not (workdir / "results" / "argon" / "params.json").exists()
        if k == 0:
            resumed = workdir
    unlock = subprocess.run(snakemake_command("--unlock"), cwd=resumed, env=venv_env, capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    done = subprocess.run(snakemake_command(), cwd=resumed, env=venv_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((plain / "results" / "argon" / "params.json").read_text())
    second = json.loads((resumed / "results" / "argon" / "params.json").read_text())
    assert first == second
