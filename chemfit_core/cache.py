"""A content-addressed cache of objective evaluations: what makes a killed fit resumable.

Each finished evaluation is written atomically to ``<directory>/<key>.json``, the key a
SHA-256 of the fit's identity (``namespace``: configuration, template text, code
version, seeds) and the exact parameter values. A deterministic optimiser restarted
after a kill asks for the same parameters again, gets them back from the cache without
recomputing, and continues from where the run stopped; only evaluations in flight at
the kill are computed again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chemfit_core.results import atomic_write_text


def namespace_of(*parts: Any) -> str:
    """A stable SHA-256 over JSON-serialisable parts (config, template text, versions...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class EvaluationCache:
    """Evaluations of one fit, keyed by exact parameter values (floats compared bit for bit)."""

    def __init__(self, directory: Path | str, namespace: str):
        self.directory = Path(directory)
        self.namespace = namespace
        self.hits = 0
        self.misses = 0

    def key(self, flat: Mapping[str, float]) -> str:
        """SHA-256 of the namespace and the parameters (hex floats: no rounding)."""
        exact = {name: float(value).hex() for name, value in sorted(flat.items())}
        return hashlib.sha256(json.dumps([self.namespace, exact]).encode()).hexdigest()

    def get(self, flat: Mapping[str, float]) -> dict[str, Any] | None:
        """The stored record for these parameters, or None (a corrupt file counts as absent)."""
        path = self.directory / f"{self.key(flat)}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return record

    def put(self, flat: Mapping[str, float], record: Mapping[str, Any]) -> None:
        """Store a finished evaluation (atomically: a kill never leaves a half-written entry)."""
        atomic_write_text(self.directory / f"{self.key(flat)}.json", json.dumps(record))

    def __len__(self) -> int:
        return len(list(self.directory.glob("*.json"))) if self.directory.is_dir() else 0


class OutputCache:
    """Output files of external-code runs, keyed by what determines them.

    The key is a SHA-256 of every file in the run's work directory just before the
    command starts (rendered inputs with their parameters and seeds, structure files a
    hook wrote there), the command line, the output file names and ``salt`` (the engine
    and its version, the parsers' code version). Entries are directories
    ``<directory>/<key>/`` holding the output files, renamed into place once complete,
    so a killed run never leaves an entry that a later one trusts. A hit copies the
    files into the new work directory and the parsers read them as if the code had run.
    """

    def __init__(self, directory: Path | str, salt: Any = None):
        self.directory = Path(directory)
        self.salt = salt
        self.hits = 0
        self.misses = 0

    def key(self, workdir: Path, command: list[str], output_files: list[Path]) -> str:
        """SHA-256 of the work directory's files, the command and the outputs' names."""
        digest = hashlib.sha256(
            json.dumps(
                [
                    self.salt,
                    [part.replace(str(workdir), "<workdir>") for part in command],
                    [str(p) for p in output_files],
                ],
                default=str,
            ).encode()
        )
        for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(workdir)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    def restore(self, key: str, workdir: Path, output_files: list[Path]) -> bool:
        """Copy a stored run's outputs into ``workdir``; False when there is none."""
        entry = self.directory / key
        if not all((entry / name).is_file() for name in output_files):
            if entry.is_dir():  # damaged by hand or by a full disk: make room for a good one
                shutil.rmtree(entry, ignore_errors=True)
            self.misses += 1
            return False
        for name in output_files:
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry / name, workdir / name)
        self.hits += 1
        return True

    def store(self, key: str, workdir: Path, output_files: list[Path]) -> None:
        """Keep a finished run's outputs (copied to a temporary folder, then renamed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.directory))
        try:
            for name in output_files:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(workdir / name, staging / name)
            staging.rename(self.directory / key)
        except OSError:  # another process stored the same run first, or the disk is full
            shutil.rmtree(staging, ignore_errors=True)
