"""Crystal targets on any lattice: hexagonal elastic tensors, compounds, formation and vacancy energies.

Checked against independent computations with the same model: elastic constants from the
energy's curvature (not the stress), the hexagonal identity C66 = (C11 − C12)/2, the general
six-strain path on the same crystal, and formation/vacancy energies recomputed from relaxed
energies of the cells themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from chemfit_core.engine.relax import relax_structures
from chemfit_core.models import build_model
from chemfit_core.science.crystal import CrystalSetup, crystal_properties, property_problem
from chemfit_core.units import EV_A3_TO_GPA


@pytest.fixture(scope="module")
def coal():
    """Co–Al EAM shipped with LAMMPS: hcp Co, fcc Al, B2 CoAl."""
    return build_model({"form": "eam/alloy", "file": "CoAl.eam.alloy"})


@pytest.fixture(scope="module")
def smooth():
    """An analytic EAM with a C² cutoff: stress–strain is clean at 0.5 % strain (tabulated files
    with a rough cutoff are not: atoms crossing it make the stress jump)."""
    return build_model(
        {
            "form": "eam/analytic",
            "D": 0.05,
            "alpha": 1.5,
            "r0": 2.8,
            "A": 1.2,
            "B": 0.002,
            "beta": 5.0,
            "cutoff": 5.5,
            "width": 1.0,
        }
    )


HCP = ["a0_A", "c_A", "C11_GPa", "C12_GPa", "C13_GPa", "C33_GPa", "C44_GPa", "C66_GPa", "B_GPa"]


def test_hexagonal_elastic_constants_agree_with_the_energy_curvature_and_symmetry(smooth, tmp_path):
    props = crystal_properties(smooth, CrystalSetup("Cu", "hcp", 2.55, fmax=1e-7), HCP)
    assert 1.5 < props["c_A"] / props["a0_A"] < 1.75
    assert props["C66_GPa"] == pytest.approx((props["C11_GPa"] - props["C12_GPa"]) / 2, rel=5e-3)
    # C33 from E(ε_zz): internally relaxed energies at ±ε, curvature / volume
    ground = bulk("Cu", "hcp", a=props["a0_A"], c=props["c_A"])
    eps = 0.003
    cells = []
    for e in (-eps, 0.0, eps):
        atoms = ground.copy()
        atoms.set_cell(ground.cell.array @ np.diag([1, 1, 1 + e]), scale_atoms=True)
        cells.append(atoms)
    energies = relax_structures(cells, smooth, fmax=1e-7, engine="torch", progress_every_s=None).energies
    curvature = (energies[0] - 2 * energies[1] + energies[2]) / eps**2 / ground.get_volume() * EV_A3_TO_GPA
    assert props["C33_GPa"] == pytest.approx(curvature, rel=0.01)
    # the general path (all six strains, from a structure file) on the same crystal
    ground.write(tmp_path / "cu_hcp.extxyz")
    general = crystal_properties(
        smooth,
        CrystalSetup("Cu", "file", structure_file=str(tmp_path / "cu_hcp.extxyz"), fmax=1e-7),
        ["C11_GPa", "C22_GPa", "C33_GPa", "C13_GPa", "C23_GPa", "C44_GPa", "C55_GPa"],
    )
    for mine, other in (
        ("C11", "C11"),
        ("C11", "C22"),
        ("C33", "C33"),
        ("C13", "C13"),
        ("C13", "C23"),
        ("C44", "C44"),
        ("C44", "C55"),
    ):
        assert general[f"{other}_GPa"] == pytest.approx(props[f"{mine}_GPa"], rel=1e-3), other


def test_a_compound_gives_formation_and_per_species_vacancy_energies(coal):
    refs = {"Co": ("hcp", 2.5), "Al": ("fcc", 4.05)}
    setup = CrystalSetup("CoAl", "cesiumchloride", 2.86, vacancy_cells=2, element_references=refs)
    names = ["a0_A", "Ec_eV", "C11_GPa", "C12_GPa", "C44_GPa", "formation_eV", "vacancy_Co_eV", "vacancy_Al_eV"]
    props = crystal_properties(coal, setup, names)
    assert props["formation_eV"] < 0  # B2 CoAl is bound against hcp Co + fcc Al
    common = dict(fmax=1e-5, engine="torch", progress_every_s=None)
    b2 = bulk("CoAl", "cesiumchloride", a=props["a0_A"], cubic=True)
    elements = relax_structures(
        [bulk("Co", "hcp", a=2.5, c=2.5 * np.sqrt(8 / 3)), bulk("Al", "fcc", a=4.05, cubic=True)],
        coal,
        relax_cell=True,
        **common,
    )
    mu = {s: e / len(a) for s, e, a in zip(("Co", "Al"), elements.energies, elements.structures)}
    e0 = relax_structures([b2], coal, **common).energies[0] / 2
    assert props["formation_eV"] == pytest.approx(e0 - (mu["Co"] + mu["Al"]) / 2, abs=1e-5)
    supercell = b2.repeat(2)
    defect = supercell.copy()
    del defect[[k for k, s in enumerate(defect.get_chemical_symbols()) if s == "Al"][0]]
    e_defect = relax_structures([defect], coal, **common).energies[0]
    assert props["vacancy_Al_eV"] == pytest.approx(e_defect - len(supercell) * e0 + mu["Al"], abs=1e-4)
    assert props["C11_GPa"] > props["C12_GPa"] > 0 and props["C44_GPa"] > 0


def test_properties_a_crystal_does_not_have_are_named():
    hcp = CrystalSetup("Co", "hcp", 2.5)
    assert "C12_GPa" not in (property_problem(hcp, ["C12_GPa", "C13_GPa"]) or "")
    assert "['C23_GPa'] are not properties of Co hcp" in property_problem(hcp, ["C23_GPa"])
    b2 = CrystalSetup("CoAl", "cesiumchloride", 2.86)
    assert "give element_references for ['Co', 'Al']" in property_problem(b2, ["formation_eV"])
    assert "vacancy_Ni_eV" in property_problem(b2, ["vacancy_Ni_eV"])
    assert "unknown crystal properties ['lattice_A']" in property_problem(b2, ["lattice_A"])
    with pytest.raises(ValueError, match="expected one of"):
        CrystalSetup("Cu", "fcc2")
