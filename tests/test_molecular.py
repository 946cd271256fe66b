"""Molecular liquids: per-molecule ΔHvap, molecule checks before any job, LAMMPS-rerun gradients
(against the torch model on a tiny atomic box, against finite differences of independent runs on
nitrogen), the gas phase, and the nitrogen example end to end through Snakemake (reduced)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from liquid_runs import ARGON_THETA, SHIPPED, argon_form, argon_md, pair_lines

from chemfit_core import ChemFitError, EvaluateContext
from chemfit_core.errors import ConfigError
from chemfit_core.file_based_computer import render_template
from chemfit_core.science.fluctuation import ModelDerivatives
from chemfit_core.science.liquid import LiquidStatePointTerm, Reference, liquid_properties, run_template_variables
from chemfit_core.science.molecules import (
    GasPhaseResult,
    GasPhaseRun,
    Molecules,
    count_problem,
    data_file_atoms,
    molecule_file_error,
)
from chemfit_core.science.rerun import RerunDerivatives, check_rerun_energies, rerun_input
from chemfit_core.stages.config import load_config
from chemfit_core.units import BAR_A3_TO_KJ_PER_MOL, EV_PER_ATOM_TO_KJ_PER_MOL, GAS_CONSTANT_KJ_PER_MOL_K

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "nitrogen"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
N2_THETA = {"epsilon_K": 34.897, "sigma_A": 3.3211}


def thermo_table(n_atoms: int, frames: int = 50, pe: float = -12.0) -> dict[str, np.ndarray]:
    return {
        "Atoms": np.full(frames, n_atoms),
        "PotEng": np.full(frames, pe),
        "Density": np.full(frames, 0.806),
        "Volume": np.full(frames, 14430.0),
        "Press": np.full(frames, 1.0),
        "Temp": np.full(frames, 77.355),
    }


# -- per-molecule ΔHvap --------------------------------------------------------------------
def test_hvap_is_per_molecule_with_the_gas_phase_energy_added():
    thermo = thermo_table(500)
    atomic = liquid_properties(thermo, 77.355, pressure_bar=1.01325)
    molecular = liquid_properties(thermo, 77.355, pressure_bar=1.01325, molecules=Molecules(250, 2))
    rt = GAS_CONSTANT_KJ_PER_MOL_K * 77.355

    def expected(n):
        return 12.0 / n * EV_PER_ATOM_TO_KJ_PER_MOL - 1.01325 * 14430.0 / n * BAR_A3_TO_KJ_PER_MOL + rt

    assert atomic.hvap_kJ_mol == pytest.approx(expected(500), rel=1e-12)
    assert molecular.hvap_kJ_mol == pytest.approx(expected(250), rel=1e-12)
    assert molecular.n_molecules == 250 and molecular.n_atoms == 500
    assert molecular.density_kg_m3 == atomic.density_kg_m3 == pytest.approx(806.0)
    gas = GasPhaseResult(0.25, 0.01)
    flexible = liquid_properties(thermo, 77.355, pressure_bar=1.01325, molecules=Molecules(250, 2), gas=gas)
    assert flexible.hvap_kJ_mol == pytest.approx(expected(250) + 0.25, rel=1e-12)
    assert flexible.hvap_kJ_mol_sem == pytest.approx(0.01)


def test_a_run_with_other_atoms_than_the_molecules_say_is_an_error():
    with pytest.raises(ChemFitError, match=r"the run has 500 atoms; expected 200 molecules × 2 atoms = 400"):
        liquid_properties(thermo_table(500), 77.355, molecules=Molecules(200, 2))


# -- checks before any job ------------------------------------------------------------------
def test_molecule_counts_that_do_not_divide_the_atoms_are_named(tmp_path):
    assert count_problem(500, 2) is None and count_problem(500, 2, 250) is None
    assert "501 atoms are not a whole number of molecules of 2 atoms" in count_problem(501, 2)
    assert "200 molecules of 2 atoms are 400 atoms, the box has 500" in count_problem(500, 2, 200)
    data = tmp_path / "box.data"
    data.write_text("LAMMPS data file\n\n501 atoms\n1 atom types\n\n0 10 xlo xhi\n\nAtoms\n\n")
    assert data_file_atoms(data) == 501


def test_lammps_quotes_its_error_for_a_bad_molecule_file(tmp_path):
    assert molecule_file_error(EXAMPLE / "N2.mol") is None
    bad = tmp_path / "bad.mol"
    bad.write_text("# one type missing\n\n2 atoms\n\nCoords\n\n1 0 0 0\n2 0 0 1.1\n\nTypes\n\n1 1\n")
    error = molecule_file_error(bad)
    assert error.startswith("ERROR") and "molecule file" in error, error  # LAMMPS's own words
    assert "no `N atoms` line" in molecule_file_error(EXAMPLE / "n2_liquid_npt.lammps.j2")


def example_project(root: Path, **molecule) -> Path:
    """A copy of examples/nitrogen in ``root`` with ``molecule`` keys changed; returns the config path."""
    shutil.copytree(EXAMPLE, root)
    path = root / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["fits"]["nitrogen"]["liquid"]["molecule"].update(molecule)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_config_checks_name_the_key_the_file_and_the_lammps_error(tmp_path):
    config = load_config(example_project(tmp_path / "good"))["fits"]["nitrogen"]
    assert config["solid"]["enabled"] is False  # the solid stage defaults off for molecules
    bad = example_project(tmp_path / "bad")
    (bad.parent / "N2.mol").write_text("# broken\n\n2 atoms\n1 bonds\n\nCoords\n\n1 0 0 0\n2 0 0 1\n\nTypes\n\n1 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(bad)
    message = str(error.value)
    assert "fits.nitrogen.liquid.molecule.file: LAMMPS rejects the molecule file" in message
    assert "bad/config.yaml: fits.nitrogen" in message and "bad/N2.mol: ERROR: " in message
    unlisted = example_project(tmp_path / "unlisted", file="other.mol")
    with pytest.raises(ConfigError, match=r"liquid.molecule.file: expected the name of one of liquid.files"):
        load_config(unlisted)
    counted = example_project(tmp_path / "counted", atoms_per_molecule=3)
    with pytest.raises(ConfigError, match=r"molecule.atoms_per_molecule: the molecule file .* has 2 atoms, got 3"):
        load_config(counted)


def test_a_data_file_with_a_partial_molecule_is_refused(tmp_path):
    path = example_project(tmp_path / "data")
    (path.parent / "box.data").write_text("LAMMPS data file\n\n501 atoms\n1 atom types\n\nAtoms\n\n")
    config = yaml.safe_load(path.read_text())
    liquid = config["fits"]["nitrogen"]["liquid"]
    liquid["molecule"].pop("count")
    liquid["molecule"]["data"] = "box.data"
    liquid["files"].append("box.data")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match=r"molecule.data: .*box.data: 501 atoms are not a whole number of molecules"):
        load_config(path)


def test_a_template_without_a_rerun_branch_is_named_before_any_job(tmp_path):
    variables = {
        **run_template_variables(87.3, 1.0, 1, 40, ARGON_VARIABLES),
        **ARGON_THETA,
        **pair_lines(argon_form(2.5), ARGON_THETA),
    }
    with pytest.raises(ChemFitError, match=r"rerun_dump set .* still runs MD: line \d+: `run "):
        rerun_input(str(SHIPPED), variables, "frames.dump", ["id", "type", "x", "y", "z"])
    path = example_project(tmp_path / "project")
    (path.parent / "n2_liquid_npt.lammps.j2").write_text(
        (EXAMPLE / "n2_liquid_npt.lammps.j2").read_text().replace("{% if not rerun_dump %}", "{% if True %}")
    )
    with pytest.raises(ConfigError, match=r"fits.nitrogen.liquid.template: .* still runs MD"):
        load_config(path)


# -- rerun machinery on a tiny atomic box -----------------------------------------------------
ARGON_VARIABLES = argon_md(
    n_cells=2, cutoff_sigma=2.5, thermo_every=10, melt_steps=100, equilibration_steps=200, production_steps=400
)


def rerun_argon_template(fixed_cutoff: bool) -> str:
    """The shipped argon template with its MD wrapped in ``{% if not rerun_dump %}`` (and optionally
    a fixed cutoff ``rc_A``, where the torch model's derivatives are taken)."""
    text = SHIPPED.read_text()
    text = text.replace("timestep        {{", "{% if not rerun_dump %}\ntimestep        {{", 1) + "{% endif %}\n"
    if fixed_cutoff:
        lines = "pair_style lj/cut {{ rc_A }}\npair_coeff 1 1 {{ epsilon_K * kB_eV_per_K }} {{ sigma_A }}"
        text = text.replace("{{ pair_lines }}", lines + "\npair_modify shift no tail yes")
    return text


def test_rerun_derivatives_equal_the_torch_models_on_the_same_frames(tmp_path):
    from chemfit_core.external.lammps import read_thermo, run_lammps

    theta = {"epsilon_K": 116.79, "sigma_A": 3.3952}
    template = rerun_argon_template(fixed_cutoff=True)
    variables = {**run_template_variables(87.3, 1.01325, 7, 20, ARGON_VARIABLES), "rc_A": 2.5 * theta["sigma_A"]}
    run = tmp_path / "md"
    run.mkdir()
    (run / "in.lammps").write_text(render_template(template, {**variables, **theta}))
    thermo = read_thermo(run_lammps(run))[-1]
    steps, energy, d_rerun = RerunDerivatives(template, variables, relative_step=1e-4)(
        theta, run / "frames.dump", tmp_path
    )
    rows = check_rerun_energies("argon", steps, energy, thermo["Step"], thermo["PotEng"])
    assert len(rows) == 21 and set(p.name for p in tmp_path.iterdir()) >= {"rerun-base", "rerun-1-down"}
    form = argon_form(2.5)
    model_steps, model_energy, d_model = ModelDerivatives(form)(theta, run / "frames.dump")
    np.testing.assert_array_equal(steps, model_steps)
    np.testing.assert_allclose(energy, model_energy, rtol=1e-9)
    np.testing.assert_allclose(d_rerun, d_model, rtol=1e-5, atol=1e-5)  # O(h²) of the central differences
    with pytest.raises(ChemFitError, match="rerun energies of the saved frames differ from the MD run's"):
        check_rerun_energies("argon", steps, energy * (1 + 1e-5), thermo["Step"], thermo["PotEng"])


def test_auto_takes_the_model_and_switches_to_reruns_where_the_template_is_not_the_form(tmp_path, caplog):
    """A template whose pair cutoff is not the form's (2.4 σ instead of 2.5 σ): the torch model's
    energies differ, so ``auto`` continues with LAMMPS reruns and says so."""
    form = argon_form(2.5)
    template = rerun_argon_template(fixed_cutoff=True)
    term = LiquidStatePointTerm(
        name="argon",
        template=template,
        workdir=tmp_path,
        temperature_K=87.3,
        pressure_bar=1.01325,
        references={"density_kg_m3": Reference(1395.4, 10.0), "hvap_kJ_mol": Reference(6.437, 0.1)},
        seed=3,
        template_variables={**ARGON_VARIABLES, "rc_A": 2.4 * 3.3952},
        form=form,
        dump_every=20,
        gradients="auto",
    )
    assert term.gradient_source == "model"
    ctx = EvaluateContext()
    with caplog.at_level("INFO"):
        term({"epsilon_K": 116.79, "sigma_A": 3.3952}, ctx)
    assert term.gradient_source == "rerun" and ctx.meta["gradient_source"] == "rerun"
    assert "gradients from LAMMPS reruns from now on" in caplog.text
    assert "frames from LAMMPS reruns (5 of 21 frames" in caplog.text
    assert set(ctx.result.jacobian) == {"epsilon_K", "sigma_A"}


# -- gas phase ------------------------------------------------------------------------------
GAS_TEMPLATE = """units metal
atom_style molecular
boundary p p p
region box block 0 200 0 200 0 200
create_box 1 box bond/types 1 extra/bond/per/atom 1 extra/special/per/atom 1
mass 1 {{ mass_g_mol }}
molecule m {{ molecule_file }}
create_atoms 0 random {{ molecule_count }} {{ seed }} NULL mol m {{ seed % 899999999 + 1 }} overlap 10 maxtry 100
pair_style lj/cut {{ cutoff_sigma * sigma_A }}
pair_coeff 1 1 {{ epsilon_K * kB_eV_per_K }} {{ sigma_A }}
bond_style harmonic
bond_coeff 1 5.0 1.1
special_bonds lj 0.0 0.0 0.0
neigh_modify exclude molecule/inter all
{% if not rerun_dump %}
timestep 0.001
velocity all create {{ temperature_K }} {{ seed }} mom yes rot yes dist gaussian
fix heat all langevin {{ temperature_K }} {{ temperature_K }} 0.05 {{ seed }}
fix move all nve
thermo 10
run {{ equilibration_steps }}
thermo_style custom step atoms temp pe
thermo_modify norm no format float %.12g
{% if dump_every %}
dump frames all custom {{ dump_every }} frames.dump id type x y z ix iy iz
dump_modify frames sort id format float %.12g
{% endif %}
run {{ production_steps }}
{% endif %}
"""


def flexible_diatomic(folder):
    """A LAMMPS molecule file of one harmonic diatomic (1.1 Å bond), written in ``folder``."""
    molecule = folder / "X2.mol"
    molecule.write_text(
        "# flexible diatomic\n\n2 atoms\n1 bonds\n\nCoords\n\n1 0 0 -0.55\n2 0 0 0.55\n\n"
        "Types\n\n1 1\n2 1\n\nBonds\n\n1 1 1 2\n"
    )
    return molecule


def diatomic_gas(template, workdir, molecule, steps, dump_every, form=None):
    """Twenty isolated diatomics at 77.355 K (seed 5) with reruns for gradients; ``steps``:
    (equilibration, production)."""
    return GasPhaseRun(
        name="gas",
        template=template,
        workdir=workdir,
        temperature_K=77.355,
        molecules=Molecules(20, 2),
        seed=5,
        template_variables={
            "mass_g_mol": 14.0067,
            "molecule_file": "X2.mol",
            "cutoff_sigma": 3.0,
            "equilibration_steps": steps[0],
            "production_steps": steps[1],
        },
        gradients=True,
        dump_every=dump_every,
        files=[molecule],
        form=form,
    )


def test_a_flexible_molecules_gas_phase_energy_is_half_kT_per_bond(tmp_path):
    """Isolated harmonic diatomics at T: ⟨U_gas⟩ = k_B T / 2 per molecule (one vibrational degree
    of freedom), independent of the LJ parameters (intramolecular pairs excluded): zero gradient."""
    molecule = flexible_diatomic(tmp_path)
    gas = diatomic_gas(GAS_TEMPLATE, tmp_path / "work", molecule, steps=(1000, 20000), dump_every=200)
    result = gas({"epsilon_K": 35.0, "sigma_A": 3.3})
    half_rt = 0.5 * GAS_CONSTANT_KJ_PER_MOL_K * 77.355
    assert abs(result.energy_kJ_mol - half_rt) < 4 * result.energy_kJ_mol_sem + 0.02 * half_rt, result
    assert result.gradient == {"epsilon_K": 0.0, "sigma_A": 0.0}
    assert not any((tmp_path / "work").iterdir())  # run folders removed


# -- nitrogen: rerun gradients against finite differences, and the example end to end -----------
N2_VARIABLES = {
    "mass_g_mol": 14.0067,
    "cutoff_sigma": 3.0,
    "tail_correction": True,
    "shift": False,
    "timestep_fs": 5.0,
    "thermo_every": 20,
    "melt_temperature_K": 100.0,
    "melt_steps": 1000,
    "equilibration_steps": 2000,
    "production_steps": 24000,
    "molecule_file": "N2.mol",
    "molecule_count": 128,
    "atoms_per_molecule": 2,
    "n_atoms": 256,
    "molecule_mass_g_mol": 28.0134,
    "start_density_kg_m3": 300.0,
    "overlap_A": 2.5,
    "maxtry": 100,
}


@pytest.mark.slow
def test_rerun_gradients_agree_with_finite_differences_of_independent_runs(tmp_path):
    """Rerun-based fluctuation gradients of rigid N2 at θ against central differences of runs at
    θ ± h (same seed: common random numbers), within four combined standard errors (the pattern of
    tests/test_fluctuation.py for the torch model)."""
    refs = {"density_kg_m3": Reference(806.08, 10.0), "hvap_kJ_mol": Reference(5.5796, 0.1)}

    def run(theta, with_gradients):
        term = LiquidStatePointTerm(
            name="n2",
            template=EXAMPLE / "n2_liquid_npt.lammps.j2",
            workdir=tmp_path,
            temperature_K=77.355,
            pressure_bar=1.01325,
            references=refs,
            seed=11,
            template_variables=N2_VARIABLES,
            gradients="rerun" if with_gradients else None,
            dump_every=40,
            files=[EXAMPLE / "N2.mol"],
            molecules=Molecules(128, 2),
        )
        ctx = EvaluateContext()
        term(theta, ctx)
        return ctx

    base = run(N2_THETA, True)
    gradients = base.quantities["gradients"]
    for name, h in (("epsilon_K", 2.0), ("sigma_A", 0.05)):
        up, down = (run({**N2_THETA, name: N2_THETA[name] + sign * h}, False).quantities for sign in (1, -1))
        for key in ("density_kg_m3", "hvap_kJ_mol"):
            fd = (up[key] - down[key]) / (2 * h)
            fd_sem = np.hypot(up[f"{key}_sem"], down[f"{key}_sem"]) / (2 * h)
            sem = np.hypot(fd_sem, gradients[f"{key}_sem"][name])
            assert abs(gradients[key][name] - fd) < 4 * sem + 0.05 * abs(fd), (name, key, gradients[key][name], fd, sem)


@pytest.mark.slow
def test_the_nitrogen_example_runs_end_to_end_through_snakemake(tmp_path, venv_env):
    """The example, reduced (100 molecules, short runs, 2 evaluations, one replica): fit with rerun
    gradients, validation runs at the fitted parameters, per-molecule properties in the results."""
    project = tmp_path / "nitrogen"
    shutil.copytree(EXAMPLE, project)
    config = yaml.safe_load((project / "config.yaml").read_text())
    fit = config["fits"]["nitrogen"]
    fit["liquid"]["molecule"]["count"] = 100
    fit["liquid"]["state_points"][0]["replicas"] = 1
    fit["liquid"]["md"].update(melt_steps=600, equilibration_steps=600, production_steps=1000, thermo_every=10)
    fit["liquid"]["md"]["dump_every"] = 20
    fit["liquid"]["validation"] = {"replicas": 1, "production_steps": 1000}
    fit["optimizer"]["max_evaluations"] = 2
    (project / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "config.yaml"]
    done = subprocess.run(command, cwd=project, env=venv_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((project / "results" / "nitrogen" / "fit.json").read_text())
    assert record["n_evaluations"] == 2
    first = record["history"][0]["term_results"][0]
    assert first["properties"]["n_molecules"] == 100 and first["properties"]["n_atoms"] == 200
    assert set(first["derivatives"]["density_kg_m3"]) == {"epsilon_K", "sigma_A"}
    log = (project / "logs" / "nitrogen" / "fit.log").read_text()
    assert "frames from LAMMPS reruns" in log
    import pandas as pd

    properties = pd.read_csv(project / "results" / "nitrogen" / "properties.csv")
    density = properties.set_index("property").loc["density_kg_m3"]
    assert 500 < density["fitted"] < 1000 and density["replicas"] == 1
    assert not (project / "results" / "nitrogen" / "solid_properties.csv").exists()  # solid stage off
    run = project / "results" / "nitrogen" / "validation" / "normal_boiling_point" / "r0"
    assert (run / "N2.mol").is_file() and "create_atoms    0 random 100" in (run / "in.lammps").read_text()


def test_the_gas_phase_template_gets_the_forms_pair_lines(tmp_path):
    """The gas template with ``{{ pair_lines }}`` for its hand-coded lj/cut lines: the same run (same
    seed) gives the same energies, and its reruns (gradients) render the form's lines too."""
    from chemfit_core.models.forms import potential_form

    molecule = flexible_diatomic(tmp_path)
    hand = "pair_style lj/cut {{ cutoff_sigma * sigma_A }}\npair_coeff 1 1 {{ epsilon_K * kB_eV_per_K }} {{ sigma_A }}"
    assert hand in GAS_TEMPLATE
    form = potential_form({"form": "lj/cut", "element": "N", "cutoff_sigma": 3.0, "tail_correction": False})
    theta = {"epsilon_K": 35.0, "sigma_A": 3.3}
    energies = []
    for template, lammps_form in ((GAS_TEMPLATE, None), (GAS_TEMPLATE.replace(hand, "{{ pair_lines }}"), form)):
        workdir = tmp_path / f"work{len(energies)}"
        gas = diatomic_gas(template, workdir, molecule, steps=(200, 1000), dump_every=100, form=lammps_form)
        result = gas(theta)
        energies.append(result.energy_kJ_mol)
        assert result.gradient == {"epsilon_K": 0.0, "sigma_A": 0.0}  # intermolecular pairs excluded
    assert energies[0] == pytest.approx(energies[1], rel=1e-10) and energies[0] > 0
