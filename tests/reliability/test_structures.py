"""Structures are checked where they are read (``read_structures``, so ``chemfit relax`` and every
stage that reads a structure file), and NaN never leaves a relaxation as "converged".

Each bad file is a real extxyz file written with ase (or edited as text where ase would not
write it); the errors must name the file and the structure index. Two atoms at distance 0
used to relax to NaN positions, exit 0 and say "converged".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write

from chemfit_core.cli import main
from chemfit_core.engine.relax import relax_structures
from chemfit_core.engine.structures import read_structures, structure_problems
from chemfit_core.errors import ChemFitError
from chemfit_core.models import build_model

LJ = ["--model", "lj/cut", "--param", "epsilon=0.0104", "--param", "sigma=3.4", "--cutoff", "8.5"]


def argon() -> Atoms:
    return bulk("Ar", "fcc", a=5.26).repeat(2)


def overlapping() -> Atoms:
    atoms = argon()
    atoms.positions[1] = atoms.positions[0]  # distance 0
    return atoms


def non_finite() -> Atoms:
    atoms = argon()
    atoms.positions[3, 2] = np.nan
    return atoms


def zero_cell() -> Atoms:
    return Atoms("Ar2", positions=[[0, 0, 0], [2.6, 0, 0]], cell=[0.0, 5.3, 5.3], pbc=True)


def singular_cell() -> Atoms:
    return Atoms("Ar2", positions=[[0, 0, 0], [2.6, 0, 0]], cell=[[5.3, 0, 0], [10.6, 0, 0], [0, 0, 5.3]], pbc=True)


def dummy_atom() -> Atoms:
    atoms = argon()
    atoms[2].symbol = "X"
    return atoms


BAD = {
    "two atoms at distance 0": (overlapping, "expected atoms at least 0.5 Å apart", "got atoms 0 and 1 0.000 Å apart"),
    "a NaN position": (non_finite, "expected finite positions", "on atom 3"),
    "a zero cell vector along a periodic axis": (zero_cell, "expected a cell vector along periodic axis x", "length 0"),
    "a singular cell": (singular_cell, "expected cell vectors along periodic axes x, y, z", "got a singular cell"),
    "a dummy atom X": (dummy_atom, "expected known chemical symbols", "'X' (atoms 2)"),
}


def bad_file(tmp_path: Path, make) -> Path:
    path = tmp_path / "in.extxyz"
    write(path, [argon(), argon(), make()], format="extxyz")  # the bad one is structure 2
    return path


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_read_structures_names_file_structure_and_problem(tmp_path, case):
    make, expected, got = BAD[case]
    path = bad_file(tmp_path, make)
    with pytest.raises(ChemFitError) as info:
        read_structures(path)
    message = str(info.value)
    assert f"{path}, structure 2: {expected}" in message and got in message, message
    assert len(read_structures(path, check=False)) == 3


def test_an_unknown_chemical_symbol_names_file_and_structure(tmp_path):
    path = tmp_path / "in.extxyz"
    write(path, [argon(), argon()], format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    lines[len(argon()) + 2 + 2] = lines[len(argon()) + 2 + 2].replace("Ar ", "Xx ", 1)  # an atom of structure 1
    path.write_text("".join(lines))
    with pytest.raises(ChemFitError, match=rf"{path}, structure 1: .*unknown chemical symbol 'Xx'"):
        read_structures(path)


def test_good_structures_of_every_kind_pass():
    molecule = Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]])
    slab = Atoms("Ar2", positions=[[0, 0, 0], [2.6, 0, 0]], cell=[5.3, 5.3, 0.0], pbc=[True, True, False])
    for atoms in (argon(), molecule, slab, Atoms("Ar"), bulk("Cu", "hcp", a=2.5, c=4.1)):
        assert structure_problems(atoms) == []


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_chemfit_relax_refuses_a_bad_structure_file(tmp_path, capsys, case):
    make, expected, _ = BAD[case]
    path = bad_file(tmp_path, make)
    out = tmp_path / "out.extxyz"
    assert main(["relax", str(path), str(out), *LJ]) == 1
    captured = capsys.readouterr()
    assert f"{path}, structure 2: {expected}" in captured.err, captured.err
    assert "converged" not in captured.out and not out.exists()


@pytest.mark.parametrize("fmax", ["nan", "inf", "0", "-0.01"])
def test_chemfit_relax_refuses_an_fmax_that_is_not_a_positive_number(tmp_path, capsys, fmax):
    path = tmp_path / "in.extxyz"
    write(path, [argon()], format="extxyz")
    assert main(["relax", str(path), str(tmp_path / "out.extxyz"), *LJ, "--fmax", fmax]) == 1
    assert "--fmax must be a finite number > 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="fmax must be a finite number > 0"):
        relax_structures(
            [argon()], build_model({"form": "lj/cut", "epsilon": 0.01, "sigma": 3.4, "cutoff": 8.5}), fmax=float(fmax)
        )


def test_overlapping_atoms_no_longer_exit_0_as_converged(tmp_path):
    """The command line as a user runs it: exit 1, the file and structure named, nothing written."""
    path = bad_file(tmp_path, overlapping)
    out = tmp_path / "out.extxyz"
    done = subprocess.run(
        [sys.executable, "-m", "chemfit_core", "relax", str(path), str(out), *LJ], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{path}, structure 2: expected atoms at least 0.5 Å apart" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("engine", ["torch", "lammps"])
def test_a_non_finite_result_is_never_converged(engine):
    """relax_structures given the overlapping pair directly (no file check in the way): the
    structure is not converged and says why; the good one beside it relaxes as before."""
    good = argon()
    good.rattle(0.05, seed=1)
    model = build_model({"form": "lj/cut", "epsilon": 0.0104, "sigma": 3.4, "cutoff": 8.5})
    result = relax_structures([good, overlapping()], model, engine=engine, device="cpu", progress_every_s=None)
    assert list(result.converged) == [True, False]
    assert result.errors[0] is None and "non-finite" in result.errors[1]
    bad = result.structures[1]
    assert bad.info["relax_converged"] is False and "non-finite" in bad.info["relax_error"]
