"""Cutoffs against the cells a fit's targets build (``chemfit check-config`` warnings): the
minimum-image rule for defect and labelled cells, and the neighbour shells of a crystal target.

:func:`cutoff_warnings` returns ``source: fits.<fit>.<key>: ...`` lines naming the fit, the key and
the numbers; they are warnings, not errors (the neighbour lists of the engine and of LAMMPS handle
any cutoff; these say where the physics of the data or the crystal suffers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

SHELL_TOLERANCE = 1.05
"""Distances within this factor of a shell's first distance belong to that shell."""
MAX_CORNERS = 64
"""At most this many corners of the bound box of the cutoff's parameters are evaluated."""


def cutoff_range(form: Any, parameters: Mapping[str, Mapping[str, float]]) -> tuple[float, float, float, list[str]]:
    """``(at the initial parameters, smallest, largest, parameters it depends on)``: a form's cutoff
    (Å, its torch model's) at the initial values and over the corners of the bounds of the
    parameters that move it (each found by moving it alone to its bounds; ``lj/cut``: σ)."""
    import itertools

    initial = {name: float(p["initial"]) for name, p in parameters.items()}

    def cutoff(values: Mapping[str, float]) -> float | None:
        try:
            return float(form.model(values).cutoff)
        except (ValueError, ArithmeticError):  # parameters the model refuses: no cutoff there
            return None

    start = cutoff(initial)
    if start is None:
        raise ValueError(f"{form.name}: no model at the initial parameters")
    moving = [
        name
        for name, p in parameters.items()
        if any(
            (c := cutoff({**initial, name: float(p[side])})) is not None and abs(c - start) > 1e-12 * start
            for side in ("lower", "upper")
        )
    ]
    values = [start]
    for corner in itertools.islice(itertools.product(("lower", "upper"), repeat=len(moving)), MAX_CORNERS):
        c = cutoff({**initial, **{n: float(parameters[n][side]) for n, side in zip(moving, corner)}})
        values += [] if c is None else [c]
    return start, min(values), max(values), moving


def perpendicular_heights(atoms: Any) -> list[float]:
    """Heights (Å) of a cell perpendicular to each pair of its lattice vectors, periodic directions
    only: V/|a_j × a_k| = 1/|b_i| (b the reciprocal vectors without 2π)."""
    import numpy as np

    inverse = np.linalg.norm(atoms.cell.reciprocal(), axis=1)
    return [float(1.0 / x) for x, p in zip(inverse, atoms.pbc) if p and x > 0]


def neighbour_shells(atoms: Any, n: int = 2) -> list[float]:
    """The first ``n`` neighbour-shell distances (Å) of a crystal, every species pair together,
    from ASE's neighbour list (a shell: distances within :data:`SHELL_TOLERANCE` of its first)."""
    import numpy as np
    from ase.neighborlist import neighbor_list

    radius = 1.0 * (atoms.get_volume() / len(atoms)) ** (1 / 3)
    shells: list[float] = []
    while len(shells) < n:
        radius *= 1.5
        shells = []
        for d in np.sort(neighbor_list("d", atoms, radius)):
            if not shells or d > shells[-1] * SHELL_TOLERANCE:
                shells.append(float(d))
    return shells[:n]


def _defect_and_labelled_cells(fit: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """(config key, cells) of the cells whose atoms are not all periodic images of one another's
    environment — a crystal target's vacancy supercell, the synthetic, LAMMPS-labelled or file
    structures — as the targets build them (a crystal's own cell is exempt: its images are its lattice)."""
    from chemfit_core.science.targets import random_cells
    from chemfit_core.stages.crystal_inputs import crystal_entries, entry_setup
    from chemfit_core.stages.objective import synthetic_cells

    out: list[tuple[str, list[Any]]] = []
    for entry in crystal_entries(fit):
        crystal = entry.section
        if any(k.startswith("vacancy") for k in [*crystal["references"], *crystal.get("validate", [])]):
            cells = [entry_setup(fit, entry).build().repeat(crystal["vacancy_cells"])]
            out.append((f"{entry.key}.vacancy_cells", cells))
    spec = fit.get("structures", {})
    if "lammps" in spec:
        out.append(
            ("structures.lammps.cells", random_cells(species=spec["lammps"]["species"], **spec["lammps"]["cells"]))
        )
    elif "synthetic" in spec:
        out.append(("structures.synthetic", synthetic_cells(fit)))
    elif "file" in spec and Path(spec["file"]).is_file():
        from ase.io import read

        out.append(("structures.file", read(spec["file"], index=":")))
    return out


def cutoff_warnings(config: Mapping[str, Any], source: str = "<config>") -> list[str]:
    """Cutoffs that do not suit the cells a fit's targets build, as ``source: fits.<fit>.<key>: ...``
    lines: the form's cutoff (at the initial parameters and over their bounds) longer than half the
    smallest perpendicular height of a defect or labelled cell (an atom then interacts with its own
    periodic image: the minimum-image rule), or shorter than the second-neighbour shell of a crystal
    target's lattice at ``a_guess_A`` (the first shell for three-body forms, which are meant to cut
    between the two)."""
    from chemfit_core.models.threebody_form import ThreeBodyForm
    from chemfit_core.stages.crystal_inputs import crystal_entries, entry_setup
    from chemfit_core.stages.objective import potential_form_of

    warnings = []
    for fit_name, fit in config["fits"].items():
        form = potential_form_of(fit)
        try:
            start, low, high, moving = cutoff_range(form, fit["parameters"])
        except ValueError:
            continue  # the config check reports a form it cannot build
        keys = [f"potential.{k}" for k in form.spec() if "cutoff" in k] or ["potential.file"]
        key = f"fits.{fit_name}.{'/'.join(keys)}"
        span = f" ({low:.4g}–{high:.4g} Å within the bounds of {', '.join(moving)})" if moving else ""
        said = f"cutoff {start:.4g} Å at the initial parameters{span}"
        for cell_key, cells in _defect_and_labelled_cells(fit):
            heights = [h for atoms in cells for h in perpendicular_heights(atoms)]
            if heights and high > min(heights) / 2:
                warnings.append(
                    f"{source}: {key}: {said} is longer than half ({min(heights) / 2:.4g} Å) the smallest "
                    f"perpendicular height of the cells of fits.{fit_name}.{cell_key}: an atom there interacts "
                    "with its own periodic image (a vacancy or a displacement sees its copies); repeat the cells "
                    "or shorten the cutoff"
                )
        for entry in crystal_entries(fit):
            try:
                setup = entry_setup(fit, entry)
                first, second = neighbour_shells(setup.build())
            except (ValueError, KeyError, OSError):
                continue  # the crystal check names what is wrong with it
            three_body = isinstance(form, ThreeBodyForm)
            shell, which = (first, "first") if three_body else (second, "second")
            if low < shell:
                warnings.append(
                    f"{source}: {key}: {said} is shorter than the {which}-neighbour shell ({shell:.4g} Å) of "
                    f"{setup.element} {setup.lattice} at fits.{fit_name}.{entry.key}.a_guess_A = {setup.a_guess_A} Å"
                    + (
                        ": no bonds within the cutoff"
                        if three_body
                        else f" (first shell {first:.4g} Å): the crystal's energy then barely distinguishes its "
                        "lattices; a cutoff between the second and third shells is the usual choice"
                    )
                )
    return warnings
