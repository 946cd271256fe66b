"""The configuration's checks per target: structure files, LAMMPS-labelled structures, crystals,
MD run lengths and liquid templates. :func:`chemfit_core.stages.config.validate_config` runs them;
each returns its problems as ``source: key: expected ..., got ...`` lines."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chemfit_core.engine.structures import MIN_DISTANCE_A

MAX_STRUCTURE_PROBLEMS = 10
"""Problems reported per structure file; the rest are counted."""


def _lammps_label_problems(where: str, spec: Mapping[str, Any]) -> list[str]:
    """Reference structures labelled by LAMMPS: their files exist, the species are symbols, and
    LAMMPS accepts the potential (one small cell is labelled now; its ERROR line is quoted)."""
    from ase.data import chemical_symbols

    problems = [
        f"{where}.files[{k}]: expected a potential file (relative to the config file), got {f!r} (no such file)"
        for k, f in enumerate(spec["files"])
        if not Path(f).is_file()
    ]
    problems += [
        f"{where}.species: expected chemical symbols, got {s!r}"
        for s in spec["species"]
        if s not in chemical_symbols[1:]
    ]
    unknown = sorted(set(spec["cells"].get("fractions", {})) - set(spec["species"]))
    if unknown:
        problems.append(f"{where}.cells.fractions: expected species of {where}.species, got {unknown}")
    if problems:
        return problems
    from chemfit_core.errors import ChemFitError
    from chemfit_core.stages.objective import lammps_labelled_structures

    try:
        one = {**spec, "cells": {**spec["cells"], "repeat": [1, 1, 1], "vacancies": False}}
        lammps_labelled_structures(one, n_structures=1)
    except (ChemFitError, ValueError, KeyError) as exc:
        return [f"{where}: expected a potential LAMMPS accepts for {spec['species']}, got: {exc}"]
    return []


def _crystal_problems(where: str, fit: Mapping[str, Any]) -> list[str]:
    """Every crystal target of a fit (``crystal``, ``crystals.<name>``): its name, the crystal it
    builds and whether that has the properties the config names; fitted crystals need a
    finite-difference Jacobian."""
    from chemfit_core.science.crystal import property_problem
    from chemfit_core.stages.crystal_inputs import crystal_entries, crystal_name_problems, entry_setup

    problems = crystal_name_problems(where, fit)
    for entry in crystal_entries(fit):
        crystal, key = entry.section, f"{where}.{entry.key}"
        if crystal.get("structure_file") and not Path(crystal["structure_file"]).is_file():
            problems.append(
                f"{key}.structure_file: expected a structure file (relative to the config file), "
                f"got {crystal['structure_file']!r} (no such file)"
            )
            continue
        try:
            setup = entry_setup(fit, entry)
            setup.species  # noqa: B018 - parses the formula
        except (ValueError, KeyError) as exc:
            problems.append(f"{key}: {exc}")
            continue
        problem = property_problem(setup, [*crystal["references"], *crystal.get("validate", [])])
        problems += [] if problem is None else [f"{key}.references: {problem}"]
    fitted = [e.key for e in crystal_entries(fit) if e.section["weight"] > 0]
    jacobian = fit["optimizer"].get("jacobian")
    if jacobian in ("analytic", "fluctuation") and fitted:
        problems.append(
            f"{where}.optimizer.jacobian: crystal targets have no analytic Jacobian; expected 2-point or "
            f"3-point, got {jacobian} (fitted crystals: {', '.join(fitted)})"
        )
    return problems


def _run_length_problems(where: str, fit: Mapping[str, Any]) -> list[str]:
    """Cross-key constraints of the MD settings: frames for the block averages and the gradients."""
    md, problems = fit["liquid"]["md"], []
    runs = {
        "md.production_steps": md["production_steps"],
        "validation.production_steps": fit["liquid"]["validation"]["production_steps"],
    }
    for key, steps in runs.items():
        rows = steps // md["thermo_every"] + 1
        if rows < md["n_blocks"]:
            problems.append(
                f"{where}.liquid.md.n_blocks: expected at most the {rows} thermo rows a run gives "
                f"({key} {steps} / thermo_every {md['thermo_every']} + 1), got {md['n_blocks']}"
            )
    if fit["optimizer"].get("jacobian") in ("analytic", "fluctuation"):
        if md["dump_every"] % md["thermo_every"]:
            problems.append(
                f"{where}.liquid.md.dump_every: expected a multiple of thermo_every "
                f"({md['thermo_every']}: every frame needs its thermo row), got {md['dump_every']}"
            )
        frames = md["production_steps"] // md["dump_every"]
        if frames < 2 * md["n_blocks"]:
            problems.append(
                f"{where}.liquid.md.dump_every: expected at least {2 * md['n_blocks']} frames "
                f"(2 per block) for the gradients' errors, got {frames} (production_steps "
                f"{md['production_steps']} / dump_every {md['dump_every']})"
            )
    return problems


def _template_problems(where: str, path: Path, fit: Mapping[str, Any]) -> list[str]:
    """Syntax errors and undefined variables of a fit's liquid template, found by rendering it the
    way the workflow does (sandboxed Jinja, ``StrictUndefined``) for every kind of run, and outputs
    the workflow reads that the rendered input does not write
    (:func:`chemfit_core.stages.template_contract.output_problems`)."""
    from chemfit_core.errors import TemplateRenderError
    from chemfit_core.file_based_computer import load_template, render_template
    from chemfit_core.stages.objective import fit_template_contexts

    try:
        template = load_template(path)
    except TemplateRenderError as exc:
        return [f"{where}: expected a valid Jinja template, got {exc}"]
    problems: dict[str, str] = {}  # one message per distinct error
    from chemfit_core.external.lammps import unsafe_commands
    from chemfit_core.stages.template_contract import output_problems

    source = Path(path).read_text()
    for label, variables in fit_template_contexts(fit):
        try:
            rendered = render_template(template, variables)
            for problem in output_problems(rendered, variables.get("dump_every", 0), source):
                problems.setdefault(problem, f"{where}: {path}: {problem} ({label})")
            for problem in unsafe_commands(rendered, str(path)):  # the sandbox the runs apply, checked now
                problems.setdefault(problem, f"{where}: {problem} ({label})")
        except Exception as exc:  # noqa: BLE001 - any failure to render is the template's problem
            cause = exc.__cause__ if isinstance(exc, TemplateRenderError) and exc.__cause__ else exc
            tb, line = cause.__traceback__, None
            while tb is not None:  # Jinja maps the template's frames to its own lines
                line = tb.tb_lineno if tb.tb_frame.f_code.co_filename == "<template>" else line
                tb = tb.tb_next
            what = getattr(cause, "message", None) or f"{type(cause).__name__}: {cause}"
            problems.setdefault(
                what,
                (
                    f"{where}: expected a template that renders with the variables the workflow sets "
                    f"({', '.join(sorted(variables))}), got {path}{f', line {line}' if line else ''}: {what} ({label})"
                ),
            )
    return list(problems.values())


# -- reference structure files ---------------------------------------------------------------
def structure_file_problems(
    where: str, file: str, element: str, needed: Sequence[str], checked_dir: Path | str | None = None
) -> list[str]:
    """Problems of an extxyz file of ``element`` structures, read as the fit reads it: missing,
    unreadable or empty, and per structure (:func:`structure_problems`) ``needed`` results
    (``energy``, ``forces``, ``stress``) absent or not finite, foreign elements, overlapping atoms.

    With ``checked_dir``, a file that passed is remembered there under a hash of its content,
    the element, ``needed`` and this checking code, and not read again: Snakemake validates
    the config at every start (under the SLURM executor, once per job), and reading and
    neighbour-listing thousands of structures each time would cost more than the job.
    A file whose content changed is checked afresh; files with problems are never remembered."""
    expected = f"an extxyz file of {element if isinstance(element, str) else '/'.join(element)} structures" + (
        f" with {', '.join(needed)}" if needed else ""
    )
    path = Path(file)
    if not path.is_file():
        return [
            (
                f"{where}: expected {expected} (relative to the working directory {Path.cwd()}), "
                f"got {file!r} (no such file)"
            )
        ]
    marker = None if checked_dir is None else Path(checked_dir) / _check_key(path, element, needed)
    if marker is not None and marker.is_file():
        return []
    from ase.io import read

    try:
        structures = read(path, index=":") if path.stat().st_size else []
    except Exception as exc:  # noqa: BLE001 - ase raises many types for a malformed file
        why = (
            f"unknown chemical symbol {exc.args[0]!r}"
            if isinstance(exc, KeyError) and exc.args
            else f"{type(exc).__name__}: {exc}"
        )
        return [f"{where}: expected {expected}, got {file!r}, which ase cannot read ({why})"]
    if not structures:
        return [f"{where}: expected at least 1 structure in {file!r}, got none (empty file)"]
    problems = [
        f"{where}: {file}, structure {i}: {what}"
        for i, atoms in enumerate(structures)
        for what in structure_problems(atoms, element, needed)
    ]
    if len(problems) > MAX_STRUCTURE_PROBLEMS:
        more = len(problems) - MAX_STRUCTURE_PROBLEMS
        problems = [*problems[:MAX_STRUCTURE_PROBLEMS], f"{where}: {file}: ... and {more} more problems"]
    if marker is not None and not problems:
        marker.parent.mkdir(parents=True, exist_ok=True)
        staged = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        staged.write_text(
            json.dumps(
                {"file": str(path.resolve()), "element": element, "needed": list(needed), "structures": len(structures)}
            )
            + "\n"
        )
        os.replace(staged, marker)  # atomic: Snakemake processes of parallel jobs may race here
    return problems


def _check_key(path: Path, element: str, needed: Sequence[str]) -> str:
    """What a structure file's check depends on, hashed: its bytes, the element, the results
    needed, the overlap distance, this module's code and the ASE version that reads it."""
    from importlib.metadata import version

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps([element, sorted(needed), MIN_DISTANCE_A, version("ase")]).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def structure_problems(atoms: Any, element: str | Sequence[str], needed: Sequence[str] = ()) -> list[str]:
    """What is wrong with one ``ase.Atoms``, each as ``expected ..., got ...``; ``element``: the
    fit's element, or the species of a form with several."""
    import numpy as np

    out = []
    allowed = {element} if isinstance(element, str) else set(element)
    symbols = atoms.get_chemical_symbols()
    foreign = sorted(set(symbols) - allowed)
    if foreign:
        at = [k for k, s in enumerate(symbols) if s not in allowed]
        out.append(
            f"expected only {', '.join(sorted(allowed))} atoms (the fit's species), got {', '.join(foreign)} "
            f"(atoms {', '.join(map(str, at[:5]))}{', ...' if len(at) > 5 else ''})"
        )
    results = atoms.calc.results if atoms.calc is not None else {}
    missing = [k for k in needed if k not in results]
    if missing:
        out.append(f"expected {', '.join(needed)} (they are fitted), got no {' and no '.join(missing)}")
    for key in (k for k in needed if k in results):
        values = np.asarray(results[key], dtype=float)
        if not np.isfinite(values).all():
            where = f" on atom {int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])}" if key == "forces" else ""
            first = values[~np.isfinite(values)][0] if values.ndim else values
            out.append(f"expected finite {key}, got {first}{where}")
    from chemfit_core.engine.structures import structure_problems as geometry_problems

    return [*out, *geometry_problems(atoms)]  # the check every reader of structures applies
