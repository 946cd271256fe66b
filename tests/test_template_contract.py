"""The liquid template contract: what a template gets and must write, checked before any job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chemfit_core.errors import ConfigError
from chemfit_core.stages.config import TEMPLATE_DIR, load_config
from chemfit_core.stages.template_contract import REQUIRED_THERMO, TEMPLATE_VARIABLES, config_warnings

REPO = Path(__file__).resolve().parent.parent
SHIPPED = (TEMPLATE_DIR / "lj_liquid_npt.lammps.j2").read_text()
THERMO = "thermo_style    custom step atoms temp press pe density vol"


def project(tmp_path: Path, template: str, jacobian: str = "2-point") -> Path:
    (tmp_path / "mine.lammps.j2").write_text(template)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    fit = config["fits"]["argon"]
    fit["liquid"]["template"] = "mine.lammps.j2"
    if jacobian != "2-point":
        fit["optimizer"] = {"method": "least_squares", "jacobian": jacobian, "options": {}}
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_shipped_template_keeps_the_contract(tmp_path):
    config = load_config(project(tmp_path, SHIPPED, jacobian="fluctuation"))
    assert config_warnings(config) == []  # and it reads every key the config gives it


def test_a_missing_thermo_column_is_named_with_its_template_line(tmp_path):
    template = SHIPPED.replace(THERMO, "thermo_style    custom step atoms temp press pe vol")
    line = next(k for k, text in enumerate(template.splitlines(), 1) if "thermo_style" in text)
    with pytest.raises(ConfigError) as info:
        load_config(project(tmp_path, template))
    message = str(info.value)
    assert "fits.argon.liquid.template" in message and f"line {line}" in message and "got no density" in message


def test_per_atom_thermo_output_is_refused(tmp_path):
    template = SHIPPED.replace("thermo_modify   norm no", "thermo_modify   norm yes")
    with pytest.raises(ConfigError, match="expected totals"):
        load_config(project(tmp_path, template))


def test_fluctuation_gradients_need_the_frames_dump(tmp_path):
    start = SHIPPED.index("{% if dump_every")
    template = SHIPPED[:start] + SHIPPED[SHIPPED.index("{% endif %}") + len("{% endif %}") :]
    load_config(project(tmp_path, template))  # no gradients: no frames needed
    with pytest.raises(ConfigError, match="no dump to frames.dump"):
        load_config(project(tmp_path, template, jacobian="fluctuation"))


def test_keys_a_template_ignores_are_reported_by_check_config(tmp_path):
    template = SHIPPED.replace("{{ n_cells }}", "4").replace("start_reduced_density", "0.8")
    path = project(tmp_path, template)
    chemfit = Path(sys.executable).parent / "chemfit"
    done = subprocess.run([str(chemfit), "check-config", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "warning" in done.stderr and "liquid.md.n_cells" in done.stderr
    assert "mine.lammps.j2" in done.stderr
    assert "liquid.md.start_reduced_density" not in done.stderr  # a schema default, not the user's key


def test_config_readme_documents_the_contract():
    text = (REPO / "config" / "README.md").read_text()
    for name in TEMPLATE_VARIABLES:
        assert f"`{name}`" in text, name
    assert " ".join(REQUIRED_THERMO) in text


def test_a_template_that_writes_outside_its_run_is_refused_before_any_job(tmp_path):
    template = SHIPPED.replace(
        "run             {{ production_steps }}", "shell rm -rf /tmp/x\nrun             {{ production_steps }}"
    )
    with pytest.raises(ConfigError, match="shell"):
        load_config(project(tmp_path, template))


def test_only_keys_the_user_wrote_are_reported_not_the_schemas_defaults(tmp_path):
    from chemfit_core.stages.config import read_config_file

    template = SHIPPED.replace("{{ n_cells }}", "4").replace("start_reduced_density", "0.8")
    path = project(tmp_path, template)
    given = read_config_file(path)
    given["fits"]["argon"]["liquid"]["md"].pop("n_cells")  # left to the schema's default
    config = load_config(path)
    warnings = config_warnings(config, "fit.yaml", given=given)
    assert not any("n_cells" in w for w in warnings)
    assert config_warnings(config, "fit.yaml") and "n_cells" in config_warnings(config, "fit.yaml")[0]


HAND_CODED_LJ = """pair_style      lj/cut {{ cutoff_sigma * sigma_A }}
pair_coeff      1 1 {{ epsilon_K * kB_eV_per_K }} {{ sigma_A }}
pair_modify     shift {{ "yes" if shift | default(false) else "no" }} tail {{ "yes" if tail_correction else "no" }}"""
"""The lines the shipped template wrote before it took the form's ``pair_lines``."""


def test_pair_lines_give_the_default_fit_the_lines_the_template_hand_coded(tmp_path):
    from chemfit_core.file_based_computer import render_template
    from chemfit_core.stages.objective import fit_template_contexts

    config = load_config(project(tmp_path, SHIPPED, jacobian="fluctuation"))
    for _, variables in fit_template_contexts(config["fits"]["argon"]):
        rendered = render_template(SHIPPED, variables).splitlines()
        pair = [line.split() for line in rendered if line.startswith("pair_")]
        expected = [line.split() for line in render_template(HAND_CODED_LJ, variables).splitlines()]
        assert pair == expected and pair[0][:2] == ["pair_style", "lj/cut"]


def test_a_column_an_observable_reads_must_be_printed_and_is_named(tmp_path):
    path = project(tmp_path, SHIPPED)
    config = yaml.safe_load(path.read_text())
    sp = config["fits"]["argon"]["liquid"]["state_points"][0]
    sp["observables"] = {"energy_eV": {"column": "etotal", "per": "atom", "value": -0.06, "denominator": 0.01}}
    sp["cp_J_mol_K"] = {"value": 40.0, "denominator": 5.0}
    path.write_text(yaml.safe_dump(config))
    load_config(path)  # the shipped template prints them: thermo_columns
    (tmp_path / "mine.lammps.j2").write_text(
        SHIPPED.replace("{% for keyword in thermo_columns", "{% for keyword in []")
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "fits.argon.liquid.template" in message and "mine.lammps.j2" in message
    assert "got no ke, etotal" in message and "line " in message


def structure_project(tmp_path: Path, template: str, reference: str | None = "g_ref.dat", **rdf) -> Path:
    """``project`` with an RDF target (reference file beside the config) and a diffusion target on
    its first state point, and a second state point with neither."""
    import numpy as np

    path = project(tmp_path, template)
    r = np.linspace(3.0, 9.0, 61)
    np.savetxt(tmp_path / "g_ref.dat", np.column_stack([r, 1 + np.exp(-r)]), header="r/A g(r)")
    config = yaml.safe_load(path.read_text())
    sp = config["fits"]["argon"]["liquid"]["state_points"][0]
    sp["rdf"] = {"file": reference, "pairs": ["Ar", "Ar"], "r_max_A": 9.0, "n_bins": 45, "denominator": 0.1, **rdf}
    sp["diffusion_1e9_m2_s"] = {"value": 2.4, "denominator": 0.3}
    other = {"name": "T95", "temperature_K": 95.0, "pressure_bar": 1.0, "density_kg_m3": dict(sp["density_kg_m3"])}
    config["fits"]["argon"]["liquid"]["state_points"].append(other)
    path.write_text(yaml.safe_dump(config))
    return path


def test_rdf_and_diffusion_targets_reach_the_shipped_template(tmp_path, monkeypatch):
    from chemfit_core.file_based_computer import render_template
    from chemfit_core.stages.objective import fit_template_contexts, rdf_of

    monkeypatch.chdir(tmp_path.parent)  # the reference resolves relative to the config, not here
    config = load_config(structure_project(tmp_path, SHIPPED))
    fit = config["fits"]["argon"]
    sp = fit["liquid"]["state_points"][0]
    assert Path(sp["rdf"]["file"]).resolve() == tmp_path / "g_ref.dat"
    assert rdf_of(fit, sp).types == "1 1" and rdf_of(fit, fit["liquid"]["state_points"][1]) is None
    label, variables = fit_template_contexts(fit)[0]
    rendered = render_template(TEMPLATE_DIR / "lj_liquid_npt.lammps.j2", variables)
    assert "compute         rdf all rdf 45 1 1 cutoff 9.0" in rendered and "c_msd[4] file msd.dat" in rendered
    _, other = fit_template_contexts(fit)[2]  # the next state point: no RDF, no MSD
    assert "compute" not in render_template(TEMPLATE_DIR / "lj_liquid_npt.lammps.j2", other)


def test_bad_rdf_targets_and_templates_without_the_outputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"state_points\[0\]\.rdf: .*missing.dat"):
        load_config(structure_project(tmp_path, SHIPPED, reference="missing.dat"))
    with pytest.raises(ConfigError, match=r"rdf\.pairs: expected species of the potential \['Ar'\], got \['Kr'\]"):
        load_config(structure_project(tmp_path, SHIPPED, pairs=["Ar", "Kr"]))
    with pytest.raises(ConfigError, match=r"rdf: no bin centre"):
        load_config(structure_project(tmp_path, SHIPPED, r_max_A=2.0, n_bins=4))
    start = SHIPPED.index("{% if rdf")
    without = SHIPPED[:start] + SHIPPED[SHIPPED.index("{% if msd") :]  # the RDF block cut out
    with pytest.raises(ConfigError, match="got no compute rdf") as info:
        load_config(structure_project(tmp_path, without))
    assert "msd" not in str(info.value)  # the MSD lines are still there
