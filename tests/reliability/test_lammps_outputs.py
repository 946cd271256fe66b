"""External-code outputs that are damaged, incomplete or not LAMMPS's at all are errors naming the
file and saying what is wrong, and rendered inputs stay inside their run directory.

Logs come from real LAMMPS runs, then cut or emptied; the "LAMMPS" that prints garbage and exits
0 is a real program standing in for the binary. A full disk is simulated (free space reported as
0 bytes): a real one cannot be made here without mounting a file system.
"""

from __future__ import annotations

import re
import stat
import sys

import pytest
from test_faults import MD_TEMPLATE

import chemfit_core.external.lammps as lammps
from chemfit_core import ChemFitError, LammpsQuantityComputer
from chemfit_core.external.lammps import IncompleteLogError, UnsafeInputError, read_thermo, run_lammps
from chemfit_core.science.liquid import properties_from_log

# An equilibration run with a short thermo table, then the production run with the columns
# the liquid properties need (the workflow's template in miniature).
TWO_RUNS = (
    MD_TEMPLATE.replace("thermo_style custom step atoms pe press\n", "thermo_style custom step pe\n")
    + "thermo_style custom step atoms temp press pe density vol\nrun 200\n"
)


@pytest.fixture(scope="module")
def log_text(tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("lammps")
    text = TWO_RUNS.replace("{{ sigma }}", "3.4").replace("{{ seed }}", "1").replace("{{ dt / 1000 }}", "0.005")
    (workdir / "in.lammps").write_text(text)
    return run_lammps(workdir).read_text()


def cut_inside_production(text: str) -> str:
    """The log up to the middle of the production run's thermo table (a kill or a full disk)."""
    start = text.rindex("Step ")
    end = text.index("Loop time of", start)
    lines = text[start:end].splitlines(keepends=True)
    return text[:start] + "".join(lines[: len(lines) // 2])


CUTS = {
    "cut to 60 %": lambda text: text[: int(0.6 * len(text))],
    "cut inside the production run": cut_inside_production,
    "emptied": lambda text: "",
    "cut before the closing line": lambda text: text[: text.rindex("Total wall time")],
}


@pytest.mark.parametrize("cut", list(CUTS), ids=list(CUTS))
def test_an_incomplete_log_is_an_error_naming_the_file(tmp_path, log_text, cut):
    log = tmp_path / "log.lammps"
    log.write_text(CUTS[cut](log_text))
    with pytest.raises(IncompleteLogError) as info:
        read_thermo(log)
    assert str(log) in str(info.value) and "incomplete" in str(info.value)
    assert "disk" not in str(info.value)  # this disk is not full


def test_a_log_cut_mid_production_says_so_not_that_the_template_lacks_columns(tmp_path, log_text):
    """The wheel's parser drops the unfinished production table and hands back the equilibration
    run's, which lacks the production columns: the message blamed the template."""
    log = tmp_path / "log.lammps"
    log.write_text(cut_inside_production(log_text))
    with pytest.raises(ChemFitError) as info:
        properties_from_log(log, 87.3)
    message = str(info.value)
    assert "production run needs" not in message
    assert re.search(r"log\.lammps: incomplete LAMMPS log: it ends inside the thermo output of run 2", message)
    assert "after step" in message
    complete = tmp_path / "complete.lammps"
    complete.write_text(log_text)
    assert properties_from_log(complete, 87.3).n_frames == 21  # the whole log reads fine


def test_an_incomplete_log_on_a_full_disk_says_the_disk_is_full(tmp_path, log_text, monkeypatch):
    log = tmp_path / "log.lammps"
    log.write_text(CUTS["cut to 60 %"](log_text))
    monkeypatch.setattr(lammps, "_free_bytes", lambda folder: 0)
    with pytest.raises(IncompleteLogError, match=r"incomplete .* the disk holding it is full \(0 bytes free; ENOSPC\)"):
        read_thermo(log)


def test_no_space_reported_by_the_command_is_named_too(tmp_path, log_text):
    log = tmp_path / "log.lammps"
    log.write_text(CUTS["cut inside the production run"](log_text))
    (tmp_path / "command_output.txt").write_text("ERROR on proc 0: write failed: No space left on device\n")
    with pytest.raises(IncompleteLogError, match="the disk holding it is full"):
        read_thermo(log)


GARBAGE_LMP = """#!{python}
import sys
args = sys.argv[1:]
log = args[args.index("-log") + 1]
with open(log, "wb") as out:
    out.write({log!r})
sys.stdout.write("garbage " * 20 + "\\n")
sys.exit(0)
"""


@pytest.mark.parametrize(
    "log", [b"\x89\x00\xff\xfe binary garbage\n", b"lorem ipsum\nStep dolor\n1 sit amet\n"], ids=["bytes", "text"]
)
def test_an_lmp_that_prints_garbage_and_exits_0_is_an_error_naming_its_log(tmp_path, monkeypatch, log):
    fake = tmp_path / "lmp"
    fake.write_text(GARBAGE_LMP.format(python=sys.executable, log=log))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(lammps, "lammps_binary", lambda: fake)
    computer = LammpsQuantityComputer(MD_TEMPLATE, tmp_path / "runs", template_variables={"seed": 1, "sigma": 3.4})
    with pytest.raises(IncompleteLogError) as info:
        computer({"dt": 5.0})
    message = str(info.value)
    assert re.search(r"runs/evaluation-\w+/log\.lammps", message), message
    assert "incomplete" in message or "not a LAMMPS log" in message


# -- rendered inputs stay in their run directory -----------------------------------------------------
UNSAFE = {
    "shell": "shell touch {outside}",
    "print to an absolute path": 'print "escaped" file {outside}',
    "print appending via ..": 'print "escaped" append ../../outside.txt',
    "log to an absolute path": "log {outside} append",
    "write_data via ..": "write_data ../final.data",
    "write_restart to an absolute path": "write_restart {outside}",
    "write_dump to an absolute path": "write_dump all atom {outside}",
    "dump to an absolute path": "dump 9 all atom 10 {outside}",
    "fix print to an absolute path": 'fix 9 all print 10 "step" file {outside}',
    "fix ave/time via a variable": "fix 9 all ave/time 1 1 10 c_thermo_temp file ${{dir}}/t.txt",
    "restart to an absolute path": "restart 10 {outside}",
    "python": 'python hello here """\nimport os\n"""',
    "continued over lines": "print &\n  'escaped' file {outside}",
}


def with_line(extra: str) -> str:
    return MD_TEMPLATE.replace("run 50\n", f"{extra}\nrun 50\n")


@pytest.mark.parametrize("case", list(UNSAFE), ids=list(UNSAFE))
def test_an_input_that_leaves_its_run_directory_is_refused_naming_the_line(tmp_path, case):
    outside = tmp_path / "outside.txt"
    command = UNSAFE[case].format(outside=outside)
    computer = LammpsQuantityComputer(
        with_line(command), tmp_path / "runs", template_variables={"seed": 1, "sigma": 3.4}
    )
    line = MD_TEMPLATE.splitlines().index("run 50") + 1
    with pytest.raises(UnsafeInputError) as info:
        computer({"dt": 5.0})
    message = str(info.value)
    shown = " ".join(command.replace("&\n", " ").split())[:60]
    assert f"in.lammps, line {line}: `{shown}" in message, message
    assert "allow_unsafe_commands=True" in message
    assert not outside.exists()  # LAMMPS never ran


def test_allow_unsafe_commands_runs_them(tmp_path):
    outside = tmp_path / "outside.txt"
    computer = LammpsQuantityComputer(
        with_line(f'print "escaped" file {outside}\nshell touch {tmp_path / "shell_ran"}'),
        tmp_path / "runs",
        template_variables={"seed": 1, "sigma": 3.4},
        allow_unsafe_commands=True,
    )
    computer({"dt": 5.0})
    assert outside.read_text().strip() == "escaped" and (tmp_path / "shell_ran").exists()


def test_files_written_inside_the_run_directory_are_fine(tmp_path):
    safe = [
        'print "inside # not a comment" file inside.txt',
        "dump 9 all atom 10 frames/all.dump",
        "write_data final.data",
        "fix 9 all print 10 'step' append steps.txt",
        "# shell rm -rf / (a comment)",
        "pair_coeff 1 1 0.0104 3.4  # reading from anywhere is fine: include, read_data, potential files",
    ]
    computer = LammpsQuantityComputer(
        with_line("\n".join(safe)).replace("dump 9 all atom 10 frames/all.dump", "dump 9 all atom 10 all.dump"),
        tmp_path / "runs",
        template_variables={"seed": 1, "sigma": 3.4},
        delete_temp_workdirs=False,
    )
    assert len(computer({"dt": 5.0})["thermo"]) == 1
    assert lammps.unsafe_commands("\n".join([*safe, "log copy.log append"])) == []
