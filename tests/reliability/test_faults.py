"""Fault injection with the real LAMMPS binary: atoms lost mid-run, inf/NaN in the output, a
run hung past its timeout, a missing output file, a failing parameter set in penalty mode,
and 32 concurrent LAMMPS terms that must each read only their own files."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from chemfit_core import (
    AsyncWrapperCOB,
    ChemFitError,
    CombinedObjectiveFunction,
    CommandTimeoutError,
    Fitter,
    LammpsError,
    LammpsQuantityComputer,
    OutputMissingError,
    TermEvaluationError,
)

# LJ argon crystal heated and run with a timestep of {{ dt }} fs: 5 fs is fine, 400 fs
# throws atoms out of the box within a few steps (LAMMPS: "Lost atoms").
MD_TEMPLATE = """units metal
atom_style atomic
lattice fcc 5.3
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
mass 1 39.948
pair_style lj/cut 8.5
pair_coeff 1 1 0.0104 {{ sigma }}
velocity all create 300 {{ seed }}
fix 1 all nve
timestep {{ dt / 1000 }}
thermo_style custom step atoms pe press
thermo_modify norm no
thermo 10
run 50
"""


def pe_loss(quantities):
    return float(quantities["thermo"][-1]["PotEng"][-1] ** 2)


def test_atoms_lost_mid_run_are_a_lammps_error_with_the_work_directory(tmp_path):
    computer = LammpsQuantityComputer(MD_TEMPLATE, tmp_path, template_variables={"seed": 1, "sigma": 3.4})
    with pytest.raises(LammpsError) as info:
        computer({"dt": 400.0})
    message = str(info.value)
    assert "Lost atoms" in message
    kept = re.search(r"work directory kept for inspection: (\S+)", message)
    assert kept and (Path(kept.group(1)) / "log.lammps").is_file()


def test_penalty_mode_turns_a_crashing_parameter_set_into_a_warned_bad_value(tmp_path, caplog):
    computer = LammpsQuantityComputer(MD_TEMPLATE, tmp_path, template_variables={"seed": 1, "sigma": 3.4})
    cob = CombinedObjectiveFunction([computer.with_loss(pe_loss)], names=["md"])
    fitter = Fitter(
        cob,
        {"dt": 5.0},
        bounds={"dt": (1.0, 500.0)},
        swallow_exceptions=True,
        log_exceptions=True,
        value_bad_params=1e6,
        progress=False,
    )
    with caplog.at_level(logging.ERROR, logger="chemfit_core.fitter"):
        # the two points an optimiser could ask for, evaluated through the fitter's own path
        good = fitter._evaluate_physical(np.array([5.0]))
        bad = fitter._evaluate_physical(np.array([400.0]))
    assert good < 1e6 and bad == 1e6
    failed = fitter.history[-1]
    assert failed.error and "Lost atoms" in failed.error and "md" in failed.error
    assert any("objective failed" in r.getMessage() for r in caplog.records)
    assert fitter.history[0].error is None  # the good evaluation is kept as it was


def test_a_crash_without_penalty_stops_the_fit_naming_the_term(tmp_path):
    computer = LammpsQuantityComputer(MD_TEMPLATE, tmp_path, template_variables={"seed": 1, "sigma": 3.4})
    cob = CombinedObjectiveFunction([computer.with_loss(pe_loss)], names=["hot md"])
    with AsyncWrapperCOB(cob, max_workers=1) as objective:
        with pytest.raises(TermEvaluationError) as info:
            objective({"dt": 400.0})
    assert info.value.name == "hot md" and isinstance(info.value.cause, LammpsError)


def test_32_concurrent_lammps_terms_each_read_their_own_output(tmp_path):
    """Each term's σ differs, so each term's energy is its own: a term that read another's
    log would report another energy."""
    template = MD_TEMPLATE.replace("velocity all create 300 {{ seed }}\n", "").replace("run 50", "run 0")
    terms, expected = [], {}
    for k in range(32):
        sigma = 3.30 + 0.005 * k
        computer = LammpsQuantityComputer(template, tmp_path, template_variables={"seed": 1, "sigma": sigma})
        terms.append(computer.with_loss(lambda q: float(q["thermo"][-1]["PotEng"][-1])))
        expected[k] = sigma
    cob = CombinedObjectiveFunction(terms, names=[f"t{k}" for k in range(32)])
    with AsyncWrapperCOB(cob, max_workers=8) as objective:
        objective({"dt": 5.0})
        energies = list(cob.last_contributions)
    serial = [
        LammpsQuantityComputer(template, tmp_path / "serial", template_variables={"seed": 1, "sigma": s})({"dt": 5.0})[
            "thermo"
        ][-1]["PotEng"][-1]
        for s in expected.values()
    ]
    assert energies == pytest.approx(serial, rel=1e-12)
    assert len(set(energies)) == 32


OVERLAP_TEMPLATE = """units metal
atom_style atomic
region box block 0 10 0 10 0 10
create_box 1 box
create_atoms 1 single 5 5 5
create_atoms 1 single 5 5 {{ z }}
mass 1 39.948
pair_style lj/cut 8.5
pair_coeff 1 1 0.0104 3.4
thermo_style custom step pe press
thermo_modify norm no
run 0
"""


def test_inf_and_nan_in_the_output_are_an_error_naming_log_and_line(tmp_path):
    """Two atoms on one spot: LAMMPS prints inf and -nan and exits 0; the parser refuses them."""
    computer = LammpsQuantityComputer(OVERLAP_TEMPLATE, tmp_path)
    assert np.isfinite(computer({"z": 8.0})["thermo"][-1]["PotEng"]).all()  # apart: fine
    with pytest.raises(ChemFitError, match=r"log\.lammps, line \d+: thermo output is not finite"):
        computer({"z": 5.0})


def test_a_hung_run_is_killed_at_its_timeout_and_its_directory_kept(tmp_path):
    """A run of 10⁹ steps with a 2 s timeout: killed (process group), a CommandTimeoutError that
    names the work directory, and no LAMMPS process left behind."""
    import subprocess
    import time

    computer = LammpsQuantityComputer(
        MD_TEMPLATE.replace("run 50", "run 1000000000"),
        tmp_path,
        template_variables={"seed": 1, "sigma": 3.4},
        command_timeout=2.0,
    )
    start = time.monotonic()
    with pytest.raises(CommandTimeoutError) as info:
        computer({"dt": 5.0})
    assert time.monotonic() - start < 30
    kept = re.search(r"(\S*evaluation-\S+?)[\s:;)]", str(info.value) + " ")
    assert kept and Path(kept.group(1).rstrip(".,")).is_dir(), str(info.value)
    running = subprocess.run(["pgrep", "-f", f"lmp -in in.lammps.*{tmp_path}"], capture_output=True, text=True)
    assert not running.stdout.strip()


def test_a_missing_output_file_is_an_error_naming_it_and_the_directory(tmp_path):
    computer = LammpsQuantityComputer(
        MD_TEMPLATE, tmp_path, template_variables={"seed": 1, "sigma": 3.4}, output_files=["rdf.dat"]
    )  # the input never writes it
    with pytest.raises(OutputMissingError, match=r"did not write rdf\.dat \(work directory kept: \S+"):
        computer({"dt": 5.0})
