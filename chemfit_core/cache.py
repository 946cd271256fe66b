"""Content-addressed caches of objective evaluations and of external-code runs: what makes a
killed fit resumable, and a rerun cheap.

:class:`EvaluationCache`: each finished evaluation is written atomically to
``<directory>/<key>.json``, the key a SHA-256 of the fit's identity (``namespace``:
configuration, template text, code version, seeds) and the exact parameter values. A
deterministic optimiser restarted after a kill asks for the same parameters again, gets them
back from the cache without recomputing, and continues from where the run stopped; only
evaluations in flight at the kill are computed again.

:class:`OutputCache`: the output files of an external-code run (LAMMPS), keyed by everything
in its work directory before it started, its command and the engine's version.

What is replayed is verified first. Every entry carries the key it was stored under and a
SHA-256 of its content (the evaluation record; each output file, with its size), and a
replayed evaluation must be well formed (a mapping the Fitter can replay, with a finite
objective and the requested parameters); a replayed run's files may be checked further by
validators (a LAMMPS log must be complete and parse). An entry that is missing, unreadable,
not JSON, of the wrong shape (``[]``, ``{}``), stored under another key, or whose checksum
does not match its content (a log cut short by a full disk, an objective edited by hand) is
a *miss*: it is logged (a warning, except for a plain missing entry), removed and computed
again, never an error and never a silently different result.

What the caches cannot detect:

- an entry rewritten *consistently*: the checksum guards against damage and careless edits,
  it is not a signature, and whoever recomputes it along with the content is believed;
- a wrong result computed and stored faithfully (a bug in the code that produced it): the
  entry is exactly what that code returned;
- changes to anything outside the key: the namespace holds the chemfit_core *version*, not
  its source (an editable install edited in place keeps its version: clear the cache after
  changing the code); the run cache's key holds the LAMMPS version, not the binary, nor
  environment variables, potential files read from outside the work directory
  (``LAMMPS_POTENTIALS``), the CPU or the maths library, which can change the last digits;
- a run whose outputs were complete but physically wrong (a blown-up simulation that still
  printed finite numbers): validators check form, not physics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from numbers import Real
from pathlib import Path
from typing import Any

from chemfit_core.results import atomic_write_text, file_sha256

logger = logging.getLogger(__name__)

ENTRY_FORMAT = 2
"""Version of the entry layout (1: the bare record / no manifest, from before the checksums)."""

MANIFEST = ".chemfit-entry.json"
"""Name of a run-cache entry's manifest (key, checksums and sizes of its files)."""


def namespace_of(*parts: Any) -> str:
    """A stable SHA-256 over JSON-serialisable parts (config, template text, versions...)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def record_checksum(record: Any) -> str:
    """SHA-256 of a JSON value in canonical form (keys sorted; floats as Python writes them,
    which read back bit for bit)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class CacheEntryError(ValueError):
    """A cache entry that is not what it claims to be (reported as a miss, never raised out)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_evaluation_record(record: Any, flat: Mapping[str, float]) -> None:
    """Raise :class:`CacheEntryError` unless ``record`` is an evaluation the Fitter can replay
    for the parameters ``flat``: the fields of :class:`~chemfit_core.fit_result.Evaluation`
    (plus ``jacobian``) with the right types, a finite objective, no error, and — where it
    records them — the exact parameters asked for."""
    from chemfit_core.fit_result import Evaluation

    if not isinstance(record, dict):
        raise CacheEntryError(f"the record is a {type(record).__name__}, not a mapping")
    known = {f.name for f in dataclasses.fields(Evaluation)} | {"jacobian"}
    unknown = sorted(set(record) - known)
    if unknown:
        raise CacheEntryError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    objective = record.get("objective")
    if not _is_number(objective) or not math.isfinite(objective):
        raise CacheEntryError(f"objective {objective!r} is not a finite number")
    if record.get("error") is not None:
        raise CacheEntryError(f"records a failed evaluation ({record['error']!r})")
    parameters = record.get("parameters", flat)
    if not isinstance(parameters, dict) or set(parameters) != set(flat):
        raise CacheEntryError("its parameters are not the ones asked for")
    for name, value in flat.items():
        if not _is_number(parameters[name]) or float(parameters[name]).hex() != float(value).hex():
            raise CacheEntryError(f"parameter {name} is {parameters[name]!r}, not {value!r}")
    for name in ("terms", "residuals"):
        values = record.get(name)
        if values is not None and (not isinstance(values, list) or not all(v is None or _is_number(v) for v in values)):
            raise CacheEntryError(f"{name} is not a list of numbers")
    if not _is_number(record.get("wall_time_s", 0.0)):
        raise CacheEntryError("wall_time_s is not a number")
    jacobian = record.get("jacobian")
    if jacobian is not None and (
        not isinstance(jacobian, list)
        or not all(isinstance(row, list) and all(_is_number(v) for v in row) for row in jacobian)
    ):
        raise CacheEntryError("jacobian is not a list of rows of numbers")
    try:  # what the Fitter's replay does with it
        Evaluation(**{**{k: v for k, v in record.items() if k != "jacobian"}, "index": 0, "parameters": dict(flat)})
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CacheEntryError(f"cannot be replayed: {type(exc).__name__}: {exc}") from exc


class EvaluationCache:
    """Evaluations of one fit, keyed by exact parameter values (floats compared bit for bit).

    An entry is ``{"format": 2, "key": ..., "sha256": ..., "record": {...}}``; :meth:`get`
    returns the record only when the key, the checksum and the record's form all hold
    (see the module docstring); anything else is a logged miss and the entry is removed.
    """

    def __init__(self, directory: Path | str, namespace: str):
        self.directory = Path(directory)
        self.namespace = namespace
        self.hits = 0
        self.misses = 0
        self.rejected = 0  # entries that existed but failed verification

    def key(self, flat: Mapping[str, float]) -> str:
        """SHA-256 of the namespace and the parameters (hex floats: no rounding)."""
        exact = {name: float(value).hex() for name, value in sorted(flat.items())}
        return hashlib.sha256(json.dumps([self.namespace, exact]).encode()).hexdigest()

    def path(self, flat: Mapping[str, float]) -> Path:
        """File of the entry for these parameters."""
        return self.directory / f"{self.key(flat)}.json"

    def get(self, flat: Mapping[str, float]) -> dict[str, Any] | None:
        """The stored record for these parameters, or None: absent, or failing verification
        (logged as a warning, the entry removed so that a good one can take its place)."""
        key = self.key(flat)
        path = self.directory / f"{key}.json"
        try:
            record = self._verified(path, key, flat)
        except FileNotFoundError:
            logger.debug("evaluation cache: no entry %s", path)
            self.misses += 1
            return None
        except (OSError, ValueError, CacheEntryError) as exc:
            logger.warning("evaluation cache: entry %s is not used (%s); the evaluation is computed again", path, exc)
            self.misses += 1
            self.rejected += 1
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return record

    @staticmethod
    def _verified(path: Path, key: str, flat: Mapping[str, float]) -> dict[str, Any]:
        text = path.read_text(encoding="utf-8")
        try:
            entry = json.loads(text)
        except ValueError as exc:
            raise CacheEntryError(f"not JSON ({exc})") from None
        if not isinstance(entry, dict) or not {"format", "key", "sha256", "record"} <= set(entry):
            what = type(entry).__name__ if not isinstance(entry, dict) else f"keys {sorted(entry)}"
            raise CacheEntryError(f"expected an entry with format, key, sha256 and record, got {what}")
        if entry["format"] != ENTRY_FORMAT:
            raise CacheEntryError(f"entry format {entry['format']!r}, expected {ENTRY_FORMAT}")
        if entry["key"] != key:
            raise CacheEntryError(f"stored under key {str(entry['key'])[:16]}..., not this one")
        if entry["sha256"] != record_checksum(entry["record"]):
            raise CacheEntryError("its checksum does not match its content (damaged or edited)")
        check_evaluation_record(entry["record"], flat)
        return entry["record"]

    def put(self, flat: Mapping[str, float], record: Mapping[str, Any]) -> None:
        """Store a finished evaluation (atomically: a kill never leaves a half-written entry)."""
        key = self.key(flat)
        record = json.loads(json.dumps(dict(record)))  # the form it will be read back in
        entry = {"format": ENTRY_FORMAT, "key": key, "sha256": record_checksum(record), "record": record}
        atomic_write_text(self.directory / f"{key}.json", json.dumps(entry))

    def __len__(self) -> int:
        return len(list(self.directory.glob("*.json"))) if self.directory.is_dir() else 0


Validator = Callable[[Path], None]
"""``validator(path)`` raises (any exception) when the output file at ``path`` is not fit to replay."""


class OutputCache:
    """Output files of external-code runs, keyed by what determines them.

    The key is a SHA-256 of every file in the run's work directory just before the
    command starts (rendered inputs with their parameters and seeds, structure files a
    hook wrote there), the command line, the output file names and ``salt`` (the engine
    and its version, the parsers' code version). Entries are directories
    ``<directory>/<key>/`` holding the output files and a manifest (:data:`MANIFEST`: the
    key, each file's size and SHA-256), renamed into place once complete, so a killed run
    never leaves an entry that a later one trusts. A hit copies the files into the new work
    directory and the parsers read them as if the code had run — after the manifest, the
    checksums and ``validators`` (``{output file name: validator}``, e.g. a LAMMPS log must
    be complete) have passed; otherwise it is a logged miss and the entry is removed.
    """

    def __init__(self, directory: Path | str, salt: Any = None, validators: Mapping[str, Validator] | None = None):
        self.directory = Path(directory)
        self.salt = salt
        self.validators: dict[str, Validator] = dict(validators or {})
        self.hits = 0
        self.misses = 0
        self.rejected = 0

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

    def _check_entry(self, entry: Path, key: str, output_files: list[Path]) -> None:
        try:
            manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CacheEntryError("no manifest (incomplete, or written before entries had checksums)") from None
        except ValueError as exc:
            raise CacheEntryError(f"manifest is not JSON ({exc})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise CacheEntryError("manifest is not a mapping with the files")
        if manifest.get("format") != ENTRY_FORMAT or manifest.get("key") != key:
            raise CacheEntryError("manifest of another format or stored under another key")
        files = manifest["files"]
        if set(files) != {str(name) for name in output_files}:
            raise CacheEntryError(f"holds {sorted(files)}, expected {sorted(str(n) for n in output_files)}")
        for name in output_files:
            path, stored = entry / name, files[str(name)]
            if not isinstance(stored, dict) or not {"size", "sha256"} <= set(stored):
                raise CacheEntryError(f"manifest entry of {name} is malformed")
            if not path.is_file():
                raise CacheEntryError(f"{name} is missing")
            size = path.stat().st_size
            if size != stored["size"]:
                raise CacheEntryError(f"{name} has {size} bytes, {stored['size']} were stored (cut short or edited)")
            if file_sha256(path) != stored["sha256"]:
                raise CacheEntryError(f"{name} does not match its checksum (damaged or edited)")
            validator = self.validators.get(str(name)) or self.validators.get(Path(name).name)
            if validator is not None:
                try:
                    validator(path)
                except Exception as exc:
                    raise CacheEntryError(f"{name} does not pass its check: {exc}") from exc

    def restore(self, key: str, workdir: Path, output_files: list[Path]) -> bool:
        """Copy a stored run's outputs into ``workdir``; False when there is none or it fails
        verification (then the entry is removed, making room for a good one)."""
        entry = self.directory / key
        if not entry.is_dir():
            self.misses += 1
            return False
        try:
            self._check_entry(entry, key, output_files)
            for name in output_files:
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry / name, workdir / name)
        except (OSError, CacheEntryError) as exc:
            logger.warning("run cache: entry %s is not used (%s); the run is repeated", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            self.misses += 1
            self.rejected += 1
            return False
        self.hits += 1
        return True

    def store(self, key: str, workdir: Path, output_files: list[Path]) -> None:
        """Keep a finished run's outputs (copied to a temporary folder with their manifest, then
        renamed into place; folders and files get the permissions the umask gives)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".{key[:12]}-{secrets.token_hex(6)}"
        try:
            os.mkdir(staging, 0o777)
            files = {}
            for name in output_files:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(workdir / name, staging / name)
                files[str(name)] = {"size": (staging / name).stat().st_size, "sha256": file_sha256(staging / name)}
            manifest = {"format": ENTRY_FORMAT, "key": key, "files": files}
            atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=1))
            staging.rename(self.directory / key)
        except OSError as exc:  # another process stored the same run first, or the disk is full
            if not (self.directory / key).is_dir():
                logger.warning("run cache: could not store %s (%s)", self.directory / key, exc)
            shutil.rmtree(staging, ignore_errors=True)
