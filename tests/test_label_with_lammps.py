"""Reference structures labelled by LAMMPS with a potential the user already has: a fit's first stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from chemfit_core.engine.state import atoms_to_state
from chemfit_core.errors import ConfigError
from chemfit_core.models import build_model
from chemfit_core.stages.config import load_config
from chemfit_core.stages.objective import lammps_labelled_structures, targets_from_config

REPO = Path(__file__).resolve().parent.parent
MISHIN = {
    "commands": ["pair_style eam/alloy", "pair_coeff * * Cu_mishin1.eam.alloy Cu"],
    "species": ["Cu"],
    "cells": {"lattice": "fcc", "a_A": 3.615, "n_structures": 4, "repeat": [2, 2, 1]},
}


def recovery_config(tmp_path: Path, lammps: dict) -> Path:
    config = yaml.safe_load((REPO / "config" / "examples" / "recovery.yaml").read_text())
    fit = config["fits"]["recovery"]
    fit["structures"] = {"lammps": lammps, "stress_denominator": 0.001}
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_labels_equal_the_same_potential_in_torch():
    structures = lammps_labelled_structures({**MISHIN, "files": []})
    model = build_model({"form": "eam/alloy", "file": "Cu_mishin1.eam.alloy"})
    assert len(structures) == 4 and len(structures[3]) == 15  # every fourth cell has a vacancy
    for atoms in structures:
        with torch.no_grad():
            out = model(atoms_to_state(atoms))
        assert out["energy"].item() == pytest.approx(atoms.get_potential_energy(), rel=1e-8)
        np.testing.assert_allclose(out["forces"].numpy(), atoms.get_forces(), atol=1e-8)
        assert np.abs(atoms.get_forces()).max() > 0.05  # rattled: forces to fit


def test_an_alloy_gets_random_sites_by_fraction():
    spec = {
        "commands": ["pair_style eam/alloy", "pair_coeff * * CuNi.eam.alloy Cu Ni"],
        "species": ["Cu", "Ni"],
        "files": [],
        "cells": {
            "lattice": "fcc",
            "a_A": 3.58,
            "fractions": {"Cu": 0.5, "Ni": 0.5},
            "n_structures": 3,
            "vacancies": False,
        },
    }
    structures = lammps_labelled_structures(spec)
    symbols = {s for atoms in structures for s in atoms.get_chemical_symbols()}
    assert symbols == {"Cu", "Ni"} and all(np.isfinite(a.get_potential_energy()) for a in structures)
    assert lammps_labelled_structures(spec)[0].get_potential_energy() == structures[0].get_potential_energy()


def test_a_fit_starts_from_a_shipped_potential_through_the_config_alone(tmp_path):
    config = load_config(recovery_config(tmp_path, MISHIN))
    [(name, term, _)] = targets_from_config(config["fits"]["recovery"])
    assert name == "structures" and len(term.structures) == 4
    start = {name: p["initial"] for name, p in config["fits"]["recovery"]["parameters"].items()}
    assert np.isfinite(term(start))


def test_a_potential_lammps_rejects_is_named_before_any_job(tmp_path):
    (tmp_path / "broken.eam.alloy").write_text("not a potential\n")
    spec = {
        **MISHIN,
        "commands": ["pair_style eam/alloy", "pair_coeff * * broken.eam.alloy Cu"],
        "files": ["broken.eam.alloy"],
    }
    with pytest.raises(ConfigError) as info:
        load_config(recovery_config(tmp_path, spec))
    message = str(info.value)
    assert "fits.recovery.structures.lammps: expected a potential LAMMPS accepts" in message and "ERROR" in message
    spec["files"] = ["missing.eam.alloy"]
    with pytest.raises(ConfigError, match=r"structures\.lammps\.files\[0\]: expected a potential file"):
        load_config(recovery_config(tmp_path, spec))


def test_charged_ionic_cells_are_labelled_with_the_charges_the_commands_set():
    """Charges in ``structures.lammps``: a Coulomb pair style makes the data files
    ``atom_style charge`` and the commands' ``set type`` lines give each type its charge
    (e), so an ionic potential labels its cells; the labels equal our own Buckingham +
    DSF model, and halving the charges (a different potential) changes them."""
    model = build_model(
        {
            "form": "buck",
            "A": [[0.0, 1280.0], [1280.0, 9547.96]],
            "rho": [[0.3, 0.29969], [0.29969, 0.21916]],
            "C": [[0.0, 0.0], [0.0, 32.0]],
            "cutoff": 6.0,
            "species": ["Mg", "O"],
            "charges": {"Mg": 2.0, "O": -2.0},
            "coulomb_cutoff": 6.0,
        }
    )
    commands = model.lammps_commands(["Mg", "O"])
    assert any(line.startswith("set type 1 charge") for line in commands)
    cells = {"lattice": "rocksalt", "formula": "MgO", "a_A": 4.21, "n_structures": 3, "vacancies": False}
    spec = {"commands": commands, "species": ["Mg", "O"], "files": [], "cells": cells}
    structures = lammps_labelled_structures(spec)
    for atoms in structures:
        with torch.no_grad():
            out = model(atoms_to_state(atoms))
        assert out["energy"].item() == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
        np.testing.assert_allclose(out["forces"].numpy(), atoms.get_forces(), atol=1e-9)
    halved = [line.replace("charge 2.0", "charge 1.0").replace("charge -2.0", "charge -1.0") for line in commands]
    other = lammps_labelled_structures({**spec, "commands": halved})
    assert other[0].get_potential_energy() != pytest.approx(structures[0].get_potential_energy(), rel=1e-3)
