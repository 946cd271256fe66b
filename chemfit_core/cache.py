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
