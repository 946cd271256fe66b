"""Writing results so that a killed run never leaves a half-written file behind.

Every file is written to a temporary name in the same folder and renamed into
place (an atomic step on POSIX file systems), so a reader sees either the old
file, or the new one whole. The file gets the permissions the umask gives
(``0o666 & ~umask``: 0644 under umask 022, 0664 under 002), as any other file the
workflow writes — not the 0600 of :func:`tempfile.mkstemp`. A full disk (ENOSPC)
while writing is a :class:`DiskFullError` naming the file; the old file, if any,
is left as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chemfit_core.errors import ChemFitError


class DiskFullError(ChemFitError, OSError):
    """The disk filled up (ENOSPC) while a result was written; nothing was replaced."""


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path`` (random name, ``O_EXCL``), mode ``0o666`` less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename (permissions from the umask).

    Raises :class:`DiskFullError` (an ``OSError`` with errno ENOSPC) naming ``path`` when
    the disk is full; ``path`` is then left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        fd, tmp = _create_temporary(path)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on device while writing {path} ({len(data)} bytes); the file was not "
                "replaced: free some space and run again",
            ) from exc
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null is explicit
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path | str, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NaN/inf become null)."""
    return atomic_write_text(path, json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def write_csv(path: Path | str, frame: Any) -> Path:
    """Atomically write a pandas DataFrame as CSV without the index."""
    return atomic_write_text(path, frame.to_csv(index=False))


def read_json(path: Path | str) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
