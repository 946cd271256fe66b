"""The two examples of docs/async_examples.md (AsyncWrapperCOB on terms that run external
programs, and on three LAMMPS setups), run as they stand in the docs.

The examples leave some names to the reader (``terms``, the LAMMPS setups, the loss
functions, ``initial_params``) and say in the prose what they are; the harness below
defines them (real subprocesses, real LAMMPS runs) and executes each code block.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from chemfit_core.external.lammps import lammps_command, lammps_env, parse_log

DOCS = Path(__file__).resolve().parent.parent / "docs" / "async_examples.md"
CODE_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
# the names each example leaves to the reader, which the harness supplies
SUPPLIED_BASIC = ("terms",)
SUPPLIED_LAMMPS = (
    "energy_setup",
    "density_setup",
    "rdf_setup",
    "energy_loss_fn",
    "density_loss_fn",
    "rdf_loss_fn",
    "initial_params",
)


def documented_examples() -> tuple[str, str]:
    """The python code blocks of docs/async_examples.md: the basic example, the LAMMPS one."""
    blocks = CODE_BLOCK.findall(DOCS.read_text(encoding="utf-8"))
    if len(blocks) != 2:
        raise AssertionError(f"{DOCS} should hold two python blocks (basic, LAMMPS), not {len(blocks)}")
    return blocks[0], blocks[1]


EXAMPLE_BASIC, EXAMPLE_LAMMPS = documented_examples()


def test_docs_hold_these_examples_and_say_what_the_reader_supplies():
    """Guard against drift: the examples run below are the docs' text, and the docs' prose
    names every name an example leaves to the reader (and the harness supplies)."""
    text = DOCS.read_text(encoding="utf-8")
    prose = CODE_BLOCK.sub("", text)
    for example, supplied in ((EXAMPLE_BASIC, SUPPLIED_BASIC), (EXAMPLE_LAMMPS, SUPPLIED_LAMMPS)):
        for line in example.strip().splitlines():
            assert line in text, line
        for name in supplied:
            assert re.search(rf"\b{name}\b", example), f"{name}: not used by the example"
            assert f"`{name}`" in prose, f"{name}: not explained in the docs' prose"


def subprocess_term(center):
    """A term whose value comes from an external process, as the example's comment supposes."""
    import subprocess

    def term(params):
        code = f"print(({params['x']!r} - {center}) ** 2)"
        return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    return term


def test_basic_example_fits_with_terms_that_run_subprocesses(capsys):
    namespace = {"terms": [subprocess_term(c) for c in (1.0, 2.0, 3.0)]}
    assert tuple(namespace) == SUPPLIED_BASIC
    exec(EXAMPLE_BASIC, namespace)
    assert namespace["opt_params"]["x"] == pytest.approx(2.0, abs=1e-4)
    assert "'x':" in capsys.readouterr().out
    namespace["executor"].shutdown()


CRYSTAL = """units metal
atom_style atomic
lattice fcc {{ a }}
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
mass 1 39.948
pair_style lj/cut 8.5
pair_coeff 1 1 {{ epsilon }} {{ sigma }}
thermo_style custom step atoms pe press
thermo_modify norm yes format float %.15g
run 0
"""


def lammps_setup(workdir: Path, lattice_constant: float) -> dict:
    """Arguments of a FileBasedQuantityComputer that runs LAMMPS on an fcc LJ crystal."""
    return {
        "output_files": ["log.lammps"],
        "output_parsers": parse_log,
        "base_working_directory": workdir,
        "executable_cmd": lammps_command(),
        "templates": {"in.lammps": CRYSTAL},
        "template_variables": {"a": lattice_constant},
        "env": lammps_env(),
    }


def test_lammps_example_recovers_known_parameters(tmp_path):
    """Three LAMMPS setups (energy per atom at three lattice constants standing in for the
    page's energy, density and RDF), targets made with known parameters, recovered by the fit."""
    truth = {"epsilon": 0.0104, "sigma": 3.40}
    setups = {name: lammps_setup(tmp_path / name, a) for name, a in (("energy", 5.3), ("density", 5.6), ("rdf", 6.2))}
    from chemfit_core import FileBasedQuantityComputer

    targets = {
        name: FileBasedQuantityComputer(**setup)(truth)["thermo"][0]["PotEng"][0] for name, setup in setups.items()
    }

    def loss_for(name):
        return lambda quantities: ((quantities["thermo"][0]["PotEng"][0] - targets[name]) / 1e-3) ** 2

    namespace = {
        "energy_setup": setups["energy"],
        "density_setup": setups["density"],
        "rdf_setup": setups["rdf"],
        "energy_loss_fn": loss_for("energy"),
        "density_loss_fn": loss_for("density"),
        "rdf_loss_fn": loss_for("rdf"),
        "initial_params": {"epsilon": 0.0115, "sigma": 3.35},
    }
    assert tuple(namespace) == SUPPLIED_LAMMPS
    exec(EXAMPLE_LAMMPS, namespace)
    fitted = namespace["opt_params"]
    assert fitted["epsilon"] == pytest.approx(truth["epsilon"], rel=1e-3)
    assert fitted["sigma"] == pytest.approx(truth["sigma"], rel=1e-3)
    namespace["async_wrapper"].close()
