"""Per-frame parameter derivatives of the energy from LAMMPS itself (``rerun``), for any template.

The fluctuation formula (:mod:`chemfit_core.science.fluctuation`) needs ∂U/∂θ of every saved
frame. Where no torch model equals the template (molecules, constraints, intramolecular terms,
any pair style), LAMMPS recomputes the energies of the same frames at shifted parameters:
the template is rendered at θ and at θ ± h_k e_k for every parameter k, and ``rerun`` reads
the frames into the system it builds, so

    ∂U/∂θ_k ≈ [U(θ + h_k e_k) − U(θ − h_k e_k)] / (2 h_k)      (per frame, error O(h_k²)),

with h_k = ``relative_step`` · |θ_k| (or ``relative_step`` where θ_k = 0). The energies at θ
itself are compared with the MD run's thermo output, so a rerun that builds another system
than the run cannot pass unnoticed. Derivatives are those of the template as rendered: a
cutoff that scales with a parameter moves with it (unlike the torch model's, at fixed cutoff).

NPT needs nothing else: the enthalpy is H = U + p V with V a coordinate of the frame (the box
is read with it) and p the barostat's set point, so ∂H/∂θ = ∂U/∂θ; the per-frame volumes come
from the run's thermo rows.

**The template's side** (documented in config/README.md): rendered with ``rerun_dump`` set
(the path of the frames, otherwise None), a template builds the same system as its MD run —
box, atoms with the same IDs, types, molecules, bonds, the force field at the given
parameters — and runs no MD (``{% if not rerun_dump %} ... {% endif %}`` around velocities,
fixes and runs). This module appends the ``rerun`` itself (:func:`rerun_commands`).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chemfit_core.errors import ChemFitError
from chemfit_core.external import lammps
from chemfit_core.external.lammps import LammpsQuantityComputer, read_thermo, run_lammps
from chemfit_core.file_based_computer import flatten_parameters, load_template, render_template

logger = logging.getLogger(__name__)

RERUN_DUMP = "frames.dump"
"""The name the frames have inside a rerun's folder (a link to the MD run's dump)."""
ENERGY_RTOL = 1e-7
"""Largest relative difference allowed between a rerun's energy at θ and the MD run's."""
_MD_COMMAND = re.compile(r"^[ \t]*(run|minimize|rerun|prd|tad|neb|temper)[ \t]", re.M)
"""Commands that run dynamics or minimisation: a rerun input must have none of its own."""


def form_template_variables(form: Any, parameters: Mapping[str, float], workdir: Path | str) -> dict[str, Any]:
    """What a liquid template gets from the potential form at ``parameters``: ``pair_lines`` (the form's
    LAMMPS lines, one per line; files a form writes land in ``workdir`` and are named relative to
    it) and ``nearest_neighbour_A`` (its nearest-neighbour distance, Å, for the starting lattice)."""
    folder = f"{Path(workdir).resolve()}/"
    lines = [line.replace(folder, "") for line in form.lammps_commands(dict(parameters), workdir)]
    out: dict[str, Any] = {"pair_lines": "\n".join(lines)}
    try:
        out["nearest_neighbour_A"] = float(form.nearest_neighbour_A(dict(parameters)))
    except NotImplementedError:
        pass
    return out


class FormLammpsComputer(LammpsQuantityComputer):
    """A :class:`LammpsQuantityComputer` that renders its template with the potential form's
    :func:`form_template_variables` at each evaluation's parameters (``form`` None: none)."""

    def __init__(self, *args: Any, form: Any | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.form = form

    def render_inputs(self, parameters: Mapping[str, Any], workdir: Path) -> None:
        """Render with ``pair_lines`` of the parameters (the form's files written into ``workdir``)."""
        extra = form_template_variables(self.form, parameters, workdir) if self.form is not None else {}
        super().render_inputs({**parameters, **extra}, workdir)


def rerun_commands(dump: str, columns: Sequence[str]) -> str:
    """The LAMMPS lines appended to a template rendered for a rerun of ``dump`` (energy per frame,
    ``thermo_modify norm no``: total eV); image flags are read where the dump has them."""
    fields = " ".join(c for c in ("x", "y", "z", "ix", "iy", "iz") if c in columns)
    return (
        "\n# appended by chemfit_core.science.rerun: energies of the saved frames\n"
        "thermo_style    custom step atoms pe vol\n"
        "thermo_modify   norm no format float %.15g\n"
        "thermo          1\n"
        f"rerun           {dump} dump {fields} box yes\n"
    )


def dump_columns(dump: Path | str) -> list[str]:
    """The per-atom columns of a LAMMPS text dump (``ITEM: ATOMS id type x y z ...``)."""
    with open(dump) as handle:
        for line in handle:
            if line.startswith("ITEM: ATOMS"):
                columns = line.split()[2:]
                if not {"id", "x", "y", "z"} <= set(columns):
                    raise ChemFitError(f"{dump}: a rerun needs the columns id x y z, the dump has {columns}")
                return columns
    raise ChemFitError(f"{dump}: no frames (no `ITEM: ATOMS` line)")


def rerun_input(template: Any, variables: Mapping[str, Any], dump: str, columns: Sequence[str]) -> str:
    """The rerun input: ``template`` rendered with ``variables`` and ``rerun_dump = dump``, checked to
    run no MD, with :func:`rerun_commands` appended.

    Raises :class:`ChemFitError` naming the template and the offending line when the rendering
    still runs MD (the template does not know ``rerun_dump``).
    """
    text = render_template(template, {**variables, "rerun_dump": dump})
    match = _MD_COMMAND.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        command = text[match.start() :].splitlines()[0].strip()
        name = getattr(template, "name", None) or "the template"
        raise ChemFitError(
            f"{name}: rendered with rerun_dump set (energies of saved frames by LAMMPS rerun) the input still "
            f"runs MD: line {line}: `{command}`; expected the system and force field only, the MD wrapped in "
            "`{% if not rerun_dump %} ... {% endif %}` (see config/README.md, LAMMPS-rerun gradients)"
        )
    return text + rerun_commands(dump, columns)


def rerun_energies(
    template: Any,
    variables: Mapping[str, Any],
    dump: Path,
    workdir: Path,
    files: Sequence[Path] = (),
    timeout: float | None = None,
    form: Any | None = None,
    parameters: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, potential energies in eV) of every frame of ``dump``, recomputed by LAMMPS with
    ``template`` rendered at ``variables`` (parameters included) in the fresh folder ``workdir``,
    where ``files`` are copied first; with ``form``, also with its :func:`form_template_variables`
    at ``parameters``."""
    workdir.mkdir(parents=True)
    if form is not None:
        variables = {**variables, **form_template_variables(form, parameters or {}, workdir)}
    for path in files:
        shutil.copyfile(path, workdir / Path(path).name)
    frames = workdir / RERUN_DUMP
    try:  # the frames are read in place, under a name inside the rerun's folder
        frames.symlink_to(Path(dump).resolve())
    except OSError:
        shutil.copyfile(dump, frames)
    text = rerun_input(template, variables, RERUN_DUMP, dump_columns(dump))
    check = getattr(lammps, "unsafe_commands", None)  # the sandbox of rendered inputs, where it exists
    unsafe = check(text, f"{workdir.name}/in.lammps") if check is not None else []
    if unsafe:
        raise ChemFitError("the rerun input runs commands outside its folder:\n  " + "\n  ".join(unsafe))
    (workdir / "in.lammps").write_text(text)
    log = run_lammps(workdir, timeout=timeout)
    thermo = read_thermo(log)[-1]
    if "PotEng" not in thermo or "Step" not in thermo:
        raise ChemFitError(f"{log}: the rerun printed no Step and PotEng columns")
    return thermo["Step"].astype(int), thermo["PotEng"]


def parameter_steps(parameters: Mapping[str, float], relative_step: float) -> dict[str, float]:
    """Central-difference step of each parameter: ``relative_step`` · |θ| (``relative_step`` at θ = 0)."""
    return {name: relative_step * (abs(value) or 1.0) for name, value in parameters.items()}


class RerunDerivatives:
    """∂U/∂θ of saved frames by central differences of LAMMPS reruns (1 + 2·n_parameters reruns).

    Args:
        template: the Jinja template (path, text or loaded) of the MD run; it must know ``rerun_dump``.
        variables: the fixed template values of the MD run (state point, seed, MD settings...).
        files: input files the template reads by name (copied into every rerun folder).
        relative_step: h_k / |θ_k| (default 1e-3; U is linear in ε for LJ, and for σ the O(h²)
            error is ~1e-6 relative, far below the statistical noise).
        timeout: seconds one rerun may take.
        label: the term's name, for logs and errors.
        form: the potential form whose LAMMPS lines the template gets as ``pair_lines`` (or None).
    """

    method = "rerun"

    def __init__(
        self,
        template: str | Path | Any,
        variables: Mapping[str, Any],
        files: Sequence[Path | str] = (),
        relative_step: float = 1e-3,
        timeout: float | None = 600.0,
        label: str = "rerun",
        form: Any | None = None,
    ):
        if not relative_step > 0:
            raise ValueError(f"{label}: relative_step must be > 0, got {relative_step}")
        self.template = template if hasattr(template, "render") else load_template(template)
        self.variables = dict(variables)
        self.files = [Path(f) for f in files]
        self.relative_step = relative_step
        self.timeout = timeout
        self.label = label
        self.form = form

    def __call__(
        self, parameters: Mapping[str, float], dump: Path, workdir: Path
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(timesteps ``[n]``, U in eV ``[n]``, ∂U/∂θ in eV per parameter unit ``[n, p]``) of the
        frames in ``dump``; the reruns run in subfolders of ``workdir``."""
        names = list(parameters)
        steps_h = parameter_steps(parameters, self.relative_step)

        def energies(theta: Mapping[str, float], tag: str) -> tuple[np.ndarray, np.ndarray]:
            variables = {**self.variables, **flatten_parameters(theta)}
            folder = workdir / f"rerun-{tag}"
            return rerun_energies(self.template, variables, dump, folder, self.files, self.timeout, self.form, theta)

        steps, energy = energies(parameters, "base")
        derivatives = np.empty((len(steps), len(names)))
        for k, name in enumerate(names):
            h = steps_h[name]
            _, up = energies({**parameters, name: parameters[name] + h}, f"{k}-up")
            _, down = energies({**parameters, name: parameters[name] - h}, f"{k}-down")
            if len(up) != len(steps) or len(down) != len(steps):
                raise ChemFitError(
                    f"{self.label}: reruns of {dump} at shifted {name} read a different number of frames"
                )
            derivatives[:, k] = (up - down) / (2.0 * h)
        return steps, energy, derivatives


def check_rerun_energies(
    label: str, steps: np.ndarray, rerun: np.ndarray, thermo_steps: np.ndarray, thermo_energy: np.ndarray
) -> np.ndarray:
    """Rows of the thermo table that match the frames' ``steps``, after checking that the rerun's
    energies at θ equal the MD run's (relative :data:`ENERGY_RTOL`).

    The first step of the run is exempt: constraint fixes (SHAKE) correct the positions when a
    run starts, after its first energy is reported, so the frame saved there differs slightly.
    """
    from chemfit_core.science.fluctuation import thermo_rows

    rows = thermo_rows(label, steps, thermo_steps)
    checked = steps != int(thermo_steps[0])
    if checked.any():
        md = thermo_energy[rows][checked]
        worst = float(np.max(np.abs(rerun[checked] - md) / np.maximum(np.abs(md), 1e-12)))
        if worst > ENERGY_RTOL:
            raise ChemFitError(
                f"{label}: LAMMPS rerun energies of the saved frames differ from the MD run's by up to "
                f"{worst:.1e} (relative): with rerun_dump set the template builds another system or force "
                "field than its MD run (same atoms, IDs, molecules and pair settings expected), or the "
                "thermo output is not printed with full precision (`thermo_modify format float %.12g`)"
            )
    return rows
