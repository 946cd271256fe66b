"""Exception types of chemfit_core.

Every error says what went wrong, where (file, key, term, work directory) and,
where it can, what to do about it. All derive from :class:`ChemFitError` so a
caller can catch the family at once.
"""

from __future__ import annotations

from pathlib import Path


class ChemFitError(Exception):
    """Base class of all errors raised by chemfit_core."""


class ConfigError(ChemFitError, ValueError):
    """A configuration value is missing, has the wrong type or is out of range."""


class TemplateRenderError(ChemFitError):
    """A Jinja template could not be rendered (syntax error or undefined variable)."""


class TermEvaluationError(ChemFitError):
    """An objective term raised; the message names the term's index and name."""

    def __init__(self, index: int, name: str, cause: BaseException):
        self.index = index
        self.name = name
        self.cause = cause
        super().__init__(f"objective term {index} ({name!r}) failed: {type(cause).__name__}: {cause}")


class ExternalCommandError(ChemFitError):
    """An external command exited with a non-zero code.

    Attributes hold the command, its exit code, the tail of its output and the
    work directory, which is kept for inspection.
    """

    def __init__(
        self,
        command: list[str],
        returncode: int | None,
        output_tail: str,
        workdir: Path | None,
        reason: str | None = None,
    ):
        self.command = list(command)
        self.returncode = returncode
        self.output_tail = output_tail
        self.workdir = workdir
        what = reason or f"exited with code {returncode}"
        lines = [f"command `{' '.join(self.command)}` {what}"]
        if output_tail.strip():
            lines.append("--- end of its output ---")
            lines.append(output_tail.rstrip())
            lines.append("---")
        if workdir is not None:
            lines.append(f"work directory kept for inspection: {workdir}")
        super().__init__("\n".join(lines))


class CommandTimeoutError(ExternalCommandError, TimeoutError):
    """An external command ran past its time limit and was killed."""


class OutputMissingError(ChemFitError, FileNotFoundError):
    """A command finished but did not write an expected output file."""


class LammpsError(ExternalCommandError):
    """LAMMPS stopped with an ``ERROR`` line; the line is quoted verbatim."""


class NonFiniteObjectiveError(ChemFitError, FloatingPointError):
    """The objective returned NaN or infinity; the fit stops rather than guess."""


class CommandCancelled(ChemFitError):
    """The evaluation was cancelled (a sibling term failed) and its command killed."""
