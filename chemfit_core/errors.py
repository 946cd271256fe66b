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
    """An objective term raised; the message names the term's index and name.

    A failing term's own exception reaches the caller with its own type (``except
    RuntimeError`` works, as in ChemFit): :func:`name_term_error` re-raises it as an
    instance of a class deriving from both its type and this one, whose message is this
    one's. ``index``, ``name`` and ``cause`` (the original exception) are set either way.
    """

    index: int
    name: str
    cause: BaseException

    def __init__(self, index: int, name: str, cause: BaseException):
        self.index = index
        self.name = name
        self.cause = cause
        super().__init__(f"objective term {index} ({name!r}) failed: {type(cause).__name__}: {cause}")


_NAMED_CLASSES: dict[type, type] = {}


def _named_class(cls: type[BaseException]) -> type[BaseException] | None:
    """``class Named(cls, TermEvaluationError)``, made once per exception type (None if impossible)."""
    named = _NAMED_CLASSES.get(cls)
    if named is None:
        try:
            named = type(cls.__name__, (cls, TermEvaluationError), {"__module__": cls.__module__})
        except TypeError:  # a C layout that cannot be combined
            return None
        named.__qualname__ = cls.__qualname__
        named.__init__ = cls.__init__  # the original signature, not TermEvaluationError's
        named.__str__ = _named_str
        named.__reduce__ = _reduce_named  # picklable although the class is made at run time
        _NAMED_CLASSES[cls] = named
    return named


def _named_str(self: BaseException) -> str:
    cause = self.cause  # type: ignore[attr-defined]
    return f"objective term {self.index} ({self.name!r}) failed: {type(cause).__name__}: {cause}"  # type: ignore[attr-defined]


def _reduce_named(self: BaseException) -> tuple:
    return (_rebuild_named, (self.cause, self.index, self.name, getattr(self, "__notes__", [])))  # type: ignore[attr-defined]


def _rebuild_named(cause: BaseException, index: int, name: str, notes: list[str]) -> BaseException:
    named = name_term_error(cause, index, name, note=False)
    named.__notes__ = list(notes)
    return named


def name_term_error(exc: BaseException, index: int, name: str, where: str = "", note: bool = True) -> BaseException:
    """The exception to raise for term ``index`` that raised ``exc``: of ``exc``'s type, naming the term.

    Returns a copy of ``exc`` whose class derives from both ``type(exc)`` and
    :class:`TermEvaluationError` (its message names the term); ``exc`` itself, with a
    note naming the term, when it already is a :class:`TermEvaluationError` or when its
    type cannot be combined. ``where`` (e.g. the MPI rank) goes into a note.
    """
    text = f"raised by objective term {index} ({name!r}){where}"
    if isinstance(exc, TermEvaluationError):
        return exc
    named_cls = _named_class(type(exc))
    named: BaseException | None = None
    if named_cls is not None:
        try:
            named = named_cls.__new__(named_cls, *exc.args)
            named.args = exc.args
            named.__dict__.update(getattr(exc, "__dict__", {}))
            if isinstance(exc, OSError):  # kept in C fields, not in args
                named.filename = exc.filename  # type: ignore[attr-defined]
                if exc.filename2 is not None:
                    named.filename2 = exc.filename2  # type: ignore[attr-defined]
        except Exception:  # an exotic __new__: keep the original object
            named = None
    if named is None:
        if note:
            exc.add_note(text)
        return exc
    named.index, named.name, named.cause = index, name, exc  # type: ignore[attr-defined]
    named.__cause__ = exc.__cause__
    named.__context__ = exc.__context__
    named.__suppress_context__ = exc.__suppress_context__
    named.__traceback__ = exc.__traceback__
    if note and where:
        named.add_note(text)
    return named


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
