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
