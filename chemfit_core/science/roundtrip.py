"""The LAMMPS round trip: the same model evaluated by LAMMPS and by torch.

:func:`round_trip` hands a fitted model to LAMMPS (pair coefficients, or a setfl file
for an analytic EAM), evaluates structures both ways and reports the agreement.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ase import Atoms

from chemfit_core.external.single_point import lammps_reference
from chemfit_core.models.forms import PotentialForm


def round_trip(
    form: PotentialForm, params: Mapping[str, float], structures: list[Atoms], workdir: Path | str
) -> dict[str, float]:
    """Largest relative differences between ``form`` at ``params`` in torch and in LAMMPS on ``structures``.

    LAMMPS gets the form's own :meth:`~chemfit_core.models.forms.PotentialForm.lammps_commands`
    (potential files written into ``workdir``). Returns ``energy`` (max |ΔE|/|E|), ``forces``
    (max |ΔF| over max |F|) and ``stress`` (max |Δσ| over max |σ|, periodic structures).
    """
    import torch
    from ase.data import chemical_symbols

    from chemfit_core.engine.state import atoms_to_state

    workdir = Path(workdir).resolve()  # LAMMPS runs inside it: the setfl path must not be relative
    workdir.mkdir(parents=True, exist_ok=True)
    model = form.model(params)
    species = [chemical_symbols[z] for z in model.species]
    commands = form.lammps_commands(params, workdir)
    reference = lammps_reference(structures, commands, workdir, species)
    with torch.no_grad():
        out = model(atoms_to_state(structures, dtype=torch.float64))
    bounds = np.cumsum([0] + [len(a) for a in structures])
    forces = out["forces"].numpy()
    worst = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for k, ref in enumerate(reference):
        worst["energy"] = max(worst["energy"], abs(out["energy"][k].item() - ref["energy"]) / abs(ref["energy"]))
        f_ref = ref["forces"]
        scale = max(np.abs(f_ref).max(), 1e-12)
        worst["forces"] = max(worst["forces"], np.abs(forces[bounds[k] : bounds[k + 1]] - f_ref).max() / scale)
        if ref["stress"] is not None:
            s_ref = ref["stress"]
            diff = np.abs(out["stress"][k].numpy() - s_ref).max() / max(np.abs(s_ref).max(), 1e-12)
            worst["stress"] = max(worst["stress"], float(diff))
    return {k: float(v) for k, v in worst.items()}


INCLUDE_FILE = "potential.lammps"
"""The LAMMPS include file of a fitted potential (``results/<fit>/potential.lammps``)."""
FILES_DIR = "potential"
"""The folder beside it holding the potential files the form writes (setfl, ``.sw``, ``.tersoff``)."""


def write_potential(
    form: PotentialForm,
    params: Mapping[str, float],
    folder: Path | str,
    masses_g_mol: Mapping[str, float] | None = None,
) -> list[dict[str, str]]:
    """Write the potential of ``form`` at ``params`` into ``folder`` for LAMMPS to run from there.

    The form's own potential file (a setfl for ``eam/analytic``, ``fitted.sw``, ``fitted.tersoff``;
    none for pair styles) goes into ``folder/potential/``, and ``folder/potential.lammps`` holds the
    lines that make LAMMPS run it — ``pair_style``, ``pair_coeff`` (naming the file relative to
    ``folder``), ``pair_modify``, ``set type ... charge`` where the form has charges — and a
    ``mass`` per type (g/mol; ``masses_g_mol`` by symbol, ASE's standard masses for the others).
    Types are numbered as the model's species. Returns ``[{"name", "role", "sha256"}]`` for the
    include file and each potential file, names relative to ``folder``.
    """
    import os

    from ase.data import atomic_masses, atomic_numbers, chemical_symbols

    from chemfit_core.results import atomic_write_text, file_sha256

    folder = Path(folder).resolve()
    files_dir = folder / FILES_DIR
    files_dir.mkdir(parents=True, exist_ok=True)
    species = [chemical_symbols[z] for z in form.model(params).species]
    written: list[Path] = []

    def relative(token: str) -> str:  # a file the form wrote, named from ``folder``
        path = Path(token)
        if path.is_absolute() and path.is_file() and path.resolve().parent == files_dir:
            written.append(path.resolve())
            return os.path.relpath(path.resolve(), folder)
        return token

    commands = [
        " ".join(relative(token) for token in line.split(" ")) for line in form.lammps_commands(params, files_dir)
    ]
    masses = dict(masses_g_mol or {})
    lines = [
        f"# {form.name} fitted by chemfit_core: {', '.join(f'{k} = {v!r}' for k, v in params.items())}",
        f"# types: {' '.join(f'{k + 1} {s}' for k, s in enumerate(species))}; units metal; include it from this",
        "# folder after the atoms exist (read_data or create_atoms"
        + (", atom_style charge)" if any(line.startswith("set type") for line in commands) else ")"),
        *commands,
        *(f"mass {k + 1} {float(masses.get(s, atomic_masses[atomic_numbers[s]]))!r}" for k, s in enumerate(species)),
    ]
    include = atomic_write_text(folder / INCLUDE_FILE, "\n".join(lines) + "\n")
    out = [{"name": INCLUDE_FILE, "role": "LAMMPS include file", "sha256": file_sha256(include)}]
    for path in dict.fromkeys(written):
        out.append(
            {
                "name": path.relative_to(folder).as_posix(),
                "role": f"{form.name} potential file",
                "sha256": file_sha256(path),
            }
        )
    return out
