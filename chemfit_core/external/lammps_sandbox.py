"""Keeping rendered LAMMPS inputs inside their run directory.

Rendered inputs of :class:`~chemfit_core.external.lammps.LammpsQuantityComputer` stay in their
run directory: a command that would run other programs (``shell``, ``python``) or write outside
the directory (``log``, ``write_*``, ``dump``, ``restart``, ``print``/``fix ... file`` to an
absolute path, a path with ``..`` or one starting with a variable) is refused, naming the file
and line, unless ``allow_unsafe_commands=True`` (:func:`unsafe_commands`). The check reads the
rendered text; a path assembled at run time from LAMMPS variables defined elsewhere is checked
only for its literal part.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

from chemfit_core.errors import TemplateRenderError


class UnsafeInputError(TemplateRenderError):
    """A rendered LAMMPS input runs other programs or writes outside its run directory."""


_RUNS_PROGRAMS = {"shell": "runs a shell command", "python": "runs Python code", "plugin": "loads a plugin"}
_WRITES_FIRST = {"log", "write_data", "write_restart", "write_coeff", "write_file"}  # the file is the 1st argument


def _commands(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, command text) of each command: comments dropped, ``&`` continuations joined."""
    pending, first = "", 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        code = line if (pending + line).count('"""') % 2 else _without_comment(line)
        if not pending:
            first = lineno
        if (pending + code).count('"""') % 2:  # inside a triple-quoted string: it goes on
            pending += code + "\n"
            continue
        if code.rstrip().endswith("&"):
            pending += code.rstrip()[:-1] + " "
            continue
        command, pending = (pending + code).strip(), ""
        if command:
            yield first, command
    if pending.strip():
        yield first, pending.strip()


def _without_comment(line: str) -> str:
    quote = None
    for k, char in enumerate(line):
        if quote is None and char == "#":
            return line[:k]
        if char in "\"'":
            quote = None if quote == char else (char if quote is None else quote)
    return line


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command, posix=True)
    except ValueError:  # unbalanced quotes: LAMMPS would refuse it anyway
        return command.split()


def _written_files(words: list[str]) -> list[str]:
    """The file names a command writes to (as given)."""
    name = words[0]
    if name in _WRITES_FIRST:
        return words[1:2]
    if name == "write_dump":  # write_dump group style file ...
        return words[3:4]
    if name == "dump":  # dump ID group style N file ...
        return words[5:6]
    if name == "restart":  # restart N root [root2] [keyword value]
        return [w for w in words[2:4] if w not in ("fileper", "nfile")]
    if name in ("print", "fix", "compute", "dump_modify", "thermo_modify"):
        return [words[k + 1] for k, w in enumerate(words[:-1]) if w in ("file", "append", "screen_file")]
    return []


def _escapes(path: str) -> bool:
    """Whether a file name may lead outside the run directory: absolute, ``~``, a ``..``
    component, or starting with a LAMMPS variable (``$x``, ``${x}``) whose value is not known here."""
    return path.startswith(("/", "~", "$")) or ".." in Path(path.replace("\\", "/")).parts or path.startswith("\\")


def unsafe_commands(text: str, source: str = "in.lammps") -> list[str]:
    """The commands of a LAMMPS input that run other programs (``shell``, ``python``,
    ``plugin``) or write a file outside the run directory, each as ``source, line N: ...``."""
    problems = []
    for lineno, command in _commands(text):
        words = _words(command)
        if not words:
            continue
        shown = " ".join(command.split())
        where = f"{source}, line {lineno}: `{shown[:120]}{'...' if len(shown) > 120 else ''}`"
        if words[0] in _RUNS_PROGRAMS:
            problems.append(f"{where} {_RUNS_PROGRAMS[words[0]]} outside the sandbox")
            continue
        if words[0] == "fix" and len(words) > 3 and words[3].startswith("python"):
            problems.append(f"{where} runs Python code outside the sandbox")
            continue
        outside = [path for path in _written_files(words) if _escapes(path)]
        if outside and outside[0].startswith("$"):
            problems.append(f"{where} writes {outside[0]!r}, which starts with a variable: it may lie outside")
        elif outside:
            problems.append(f"{where} writes {outside[0]!r}, outside the run directory")
    return problems
