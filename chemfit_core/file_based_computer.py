"""Quantities from an external code: render inputs, run a command, parse outputs.

:class:`FileBasedQuantityComputer` keeps ChemFit 3.1.1's constructor arguments
and adds what its users miss:

- inputs rendered from Jinja templates in a sandboxed environment with
  ``StrictUndefined``: a variable the template uses but nobody set is an error
  that names it, never an empty string in a LAMMPS input;
- every evaluation gets a fresh directory made atomically by ``mkdtemp`` under
  ``base_working_directory``, so concurrent evaluations cannot collide;
- the command runs without a shell, in its own process group, with a time limit
  (``command_timeout``); on timeout or cancellation the whole group is killed;
- a failure raises :class:`~chemfit_core.errors.ExternalCommandError` quoting the
  command, its exit code, the tail of its output and the kept work directory;
- an output file that was not written is an error, not a silent wait.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from chemfit_core.abstract_objective_function import EvaluateContext, Parameters, QuantityComputer
from chemfit_core.cache import OutputCache
from chemfit_core.errors import (
    CommandCancelled,
    CommandTimeoutError,
    ExternalCommandError,
    OutputMissingError,
    TemplateRenderError,
)
from chemfit_core.external.process import OUTPUT_LOG, run_command, tail_of_file

__all__ = [
    "CommandCancelled",
    "FileBasedQuantityComputer",
    "OUTPUT_LOG",
    "load_template",
    "render_template",
    "run_command",
    "tail_of_file",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class OutputParser(Protocol):
    """``parser(output_files) -> quantities``; paths are those of one evaluation."""

    def __call__(self, output_files: list[Path]) -> dict[str, Any]: ...


CommandType = Callable[[Parameters, Path], Sequence[str]]


# -- templates ---------------------------------------------------------------------------
_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def load_template(source: str | Path) -> jinja2.Template:
    """Compile a template from a file or from text.

    A ``Path``, or a one-line string without Jinja markers, names a file that must
    exist; any other string is the template text. A syntax error is reported
    with the template's file name and line.
    """
    is_text = isinstance(source, str) and ("\n" in source or "{{" in source or "{%" in source)
    if is_text:
        name, text = "<template text>", str(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise TemplateRenderError(f"template file {path} does not exist")
        name, text = str(path), path.read_text()
    try:
        template = _ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(f"template {name}, line {exc.lineno}: syntax error: {exc.message}") from exc
    template.name = name
    return template


def render_template(template: jinja2.Template | str | Path, variables: Mapping[str, Any]) -> str:
    """Render ``template`` with ``variables``; an undefined variable is named in the error."""
    if not isinstance(template, jinja2.Template):
        template = load_template(template)
    try:
        return template.render(**variables)
    except jinja2.UndefinedError as exc:
        raise TemplateRenderError(
            f"template {template.name}: {exc.message}; set it in the parameters or in "
            f"template_variables (given: {', '.join(sorted(variables)) or 'nothing'})"
        ) from exc
    except jinja2.TemplateError as exc:
        raise TemplateRenderError(f"template {template.name}: {exc}") from exc


def flatten_parameters(parameters: Mapping[str, Any], sep: str = "__") -> dict[str, Any]:
    """Nested parameter dicts as template variables: ``{"a": {"b": 1}}`` → ``{"a__b": 1}``.

    The nested dicts stay available under their own names too.
    """
    flat: dict[str, Any] = dict(parameters)
    for key, value in parameters.items():
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten_parameters(value, sep).items():
                flat[f"{key}{sep}{sub_key}"] = sub_value
    return flat


# -- the quantity computer -----------------------------------------------------------------
class FileBasedQuantityComputer(QuantityComputer):
    """Parameters → rendered input files → external command → parsed quantities.

    Arguments shared with ChemFit 3.1.1:
        output_files: paths, relative to the work directory, the command must write.
        output_parsers: one or more ``parser(output_files) -> dict``; results merged.
        base_working_directory: each evaluation gets a fresh directory below it.
        executable_cmd: ``cmd(parameters, workdir) -> list[str]``, or a fixed list.
        presubmit_hook: ``hook(parameters, workdir)`` run before the command.
        wait_timeout: seconds to wait for output files after the command returned
            (for commands that submit work elsewhere; default 0: they must exist).
        poll_interval: seconds between checks for outputs and cancellation.
        subprocess_run_args: ``env`` and ``cwd``-free extras: only ``env`` is used.
        delete_temp_workdirs: remove a successful evaluation's directory.
        write_dump_file_after_crash: write ``<workdir>.dump`` with the failure.
        keep_temp_workdir_after_crash: keep a failed evaluation's directory.
        try_parsing_after_exception: parse outputs even after a non-zero exit.

    Additions:
        templates: ``{input file name: template path or text}`` rendered into the
            work directory with the (flattened) parameters and ``template_variables``.
        template_variables: fixed values the templates may use.
        command_timeout: seconds the command may run (None: no limit).
        env: extra environment variables for the command.
        name: label used for work directories, logs and errors.
        output_cache: a :class:`~chemfit_core.cache.OutputCache`: a run whose work
            directory, command and engine match a stored one is not repeated; its
            outputs are copied in and parsed (``ctx.meta["output_cache"]``: hit/miss).
    """

    def __init__(
        self,
        output_files: Sequence[Path | str],
        output_parsers: Sequence[OutputParser] | OutputParser,
        base_working_directory: Path | str,
        executable_cmd: CommandType | Sequence[str] | None = None,
        presubmit_hook: Callable[[Parameters, Path], None] | None = None,
        wait_timeout: float | None = 0.0,
        poll_interval: float = 0.05,
        subprocess_run_args: dict | None = None,
        delete_temp_workdirs: bool = True,
        write_dump_file_after_crash: bool = True,
        keep_temp_workdir_after_crash: bool = True,
        try_parsing_after_exception: bool = False,
        *,
        templates: Mapping[str, str | Path] | None = None,
        template_variables: Mapping[str, Any] | None = None,
        command_timeout: float | None = 3600.0,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        output_cache: OutputCache | None = None,
    ):
        super().__init__()
        self.output_files = [Path(f) for f in output_files]
        for path in self.output_files:
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(
                    f"output file {path} must be a path inside the work directory (relative, without '..')"
                )
        parsers = [output_parsers] if callable(output_parsers) else list(output_parsers)
        for parser in parsers:
            if not callable(parser):
                raise TypeError(f"output parser {parser!r} is not callable")
        self.output_parsers: list[OutputParser] = parsers
        self.base_working_directory = Path(base_working_directory)
        self.executable_cmd = executable_cmd
        self.presubmit_hook = presubmit_hook
        self.wait_timeout = wait_timeout or 0.0
        self.poll_interval = poll_interval
        self.subprocess_run_args = dict(subprocess_run_args or {})
        self.delete_temp_workdirs = delete_temp_workdirs
        self.write_dump_file_after_crash = write_dump_file_after_crash
        self.keep_temp_workdir_after_crash = keep_temp_workdir_after_crash
        self.try_parsing_after_exception = try_parsing_after_exception
        self.templates = {name_: load_template(source) for name_, source in (templates or {}).items()}
        for input_name in self.templates:
            if Path(input_name).is_absolute() or ".." in Path(input_name).parts:
                raise ValueError(f"template target {input_name} must stay inside the work directory")
        self.template_variables = dict(template_variables or {})
        self.command_timeout = command_timeout
        self.env = dict(env or {})
        self.name = name or "evaluation"
        self.output_cache = output_cache

    # -- ChemFit's builder helpers ---------------------------------------------------------
    def with_cmd(self, executable_cmd: Callable[..., Sequence[str]], /, **kwargs: Any):
        """Copy of this computer with ``executable_cmd`` (keyword arguments bound)."""
        new = copy.copy(self)
        new.executable_cmd = functools.partial(executable_cmd, **kwargs)
        return new

    def with_presubmit(self, presubmit: Callable[..., None], /, **kwargs: Any):
        """Copy of this computer with ``presubmit`` as hook (keyword arguments bound)."""
        new = copy.copy(self)
        new.presubmit_hook = functools.partial(presubmit, **kwargs)
        return new

    # -- one evaluation --------------------------------------------------------------------
    def create_temp_workdir(self) -> Path:
        """A fresh, uniquely named directory below ``base_working_directory``."""
        self.base_working_directory.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{_safe(self.name)}-", dir=self.base_working_directory))

    def render_inputs(self, parameters: Parameters, workdir: Path) -> None:
        """Write every template's rendering into ``workdir``."""
        variables = {**self.template_variables, **flatten_parameters(parameters)}
        for input_name, template in self.templates.items():
            target = workdir / input_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render_template(template, variables))

    def build_cmd(self, parameters: Parameters, workdir: Path) -> list[str]:
        """The command line for this evaluation."""
        if self.executable_cmd is None:
            raise ValueError(f"{self.name}: no command given; pass executable_cmd or use with_cmd()")
        if callable(self.executable_cmd):
            return [str(part) for part in self.executable_cmd(parameters, workdir)]
        return [str(part) for part in self.executable_cmd]

    def command_env(self) -> dict[str, str]:
        """Environment of the command: ours, then ``subprocess_run_args['env']``, then ``env``."""
        return {**os.environ, **self.subprocess_run_args.get("env", {}), **self.env}

    def _compute(self, parameters: Parameters, ctx: EvaluateContext) -> dict[str, Any]:
        workdir = self.create_temp_workdir()
        ctx.temp.workdir = workdir
        ctx.temp.output_files = [workdir / path for path in self.output_files]
        try:
            self.render_inputs(parameters, workdir)
            if self.presubmit_hook is not None:
                self.presubmit_hook(parameters, workdir)
            command = self.build_cmd(parameters, workdir)
            ctx.temp.cmd = command
            cache = self.output_cache
            key = None if cache is None else cache.key(workdir, command, self.output_files)
            hit = key is not None and cache.restore(key, workdir, self.output_files)
            if key is not None:
                ctx.meta["output_cache"] = "hit" if hit else "miss"
            completed = True if hit else self._run(command, workdir, ctx)
            self.wait_for_outputs(ctx.temp.output_files, workdir)
            quantities: dict[str, Any] = {}
            for parser in self.output_parsers:
                quantities.update(parser(list(ctx.temp.output_files)))
            if key is not None and not hit and completed:  # parsed fine: worth keeping
                cache.store(key, workdir, self.output_files)
        except BaseException as exc:
            self._after_failure(exc, workdir, ctx)
            raise
        if self.delete_temp_workdirs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            ctx.meta["workdir"] = str(workdir)
        return quantities

    def _run(self, command: list[str], workdir: Path, ctx: EvaluateContext) -> bool:
        """Run the command; False when it failed but its outputs are to be parsed anyway."""
        try:
            ctx.meta["command_wall_s"] = run_command(
                command,
                workdir,
                timeout=self.command_timeout,
                env=self.command_env(),
                cancel=getattr(ctx.shared, "cancel", None),
                poll_interval=self.poll_interval,
            )
        except ExternalCommandError as exc:
            if not self.try_parsing_after_exception or isinstance(exc, CommandTimeoutError):
                raise self.explain_failure(exc, workdir) from exc
            logger.warning("%s; parsing its outputs anyway", exc)
            return False
        return True

    def explain_failure(self, exc: ExternalCommandError, workdir: Path) -> ExternalCommandError:
        """Hook for subclasses to turn a failed command into a more telling error."""
        return exc

    def wait_for_outputs(self, output_files: list[Path], workdir: Path) -> None:
        """Return once every output exists; wait at most ``wait_timeout`` seconds."""
        deadline = time.monotonic() + self.wait_timeout
        while True:
            missing = [path for path in output_files if not path.exists()]
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise OutputMissingError(
                    f"{self.name}: the command finished but did not write "
                    f"{', '.join(str(p.relative_to(workdir)) for p in missing)} "
                    f"(work directory kept: {workdir}; its output: {workdir / OUTPUT_LOG})"
                )
            time.sleep(self.poll_interval)

    def _after_failure(self, exc: BaseException, workdir: Path, ctx: EvaluateContext) -> None:
        if isinstance(exc, CommandCancelled) or not self.keep_temp_workdir_after_crash:
            shutil.rmtree(workdir, ignore_errors=True)
            return
        ctx.meta["workdir"] = str(workdir)
        if self.write_dump_file_after_crash:
            dump = workdir.with_name(workdir.name + ".dump")
            try:
                dump.write_text(
                    f"error: {type(exc).__name__}: {exc}\n"
                    f"command: {getattr(ctx.temp, 'cmd', None)}\n"
                    f"parameters: {ctx.parameters}\n"
                )
            except OSError:  # a full disk must not hide the original error
                logger.warning("could not write %s", dump)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:64] or "eval"
