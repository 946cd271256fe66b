"""The radial distribution function as a target: LAMMPS's ``compute rdf`` averaged per bin.

Checked against an independent computation: g(r) of the frames dumped in the same run, from ASE's
neighbour list (every periodic image within r_max) and a numpy histogram; the per-bin block errors
against the scatter over independent runs; the reference's interpolation, weights and errors on
synthetic curves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from ase.neighborlist import neighbor_list
from liquid_runs import structure_run

from chemfit_core import ChemFitError
from chemfit_core.science.structure_observables import (
    RdfTarget,
    block_means,
    read_rdf,
    read_reference_rdf,
    structure_properties,
)

R_MAX, N_BINS = 12.0, 48


def rdf_variable(every: int = 20) -> dict:
    return {"n_bins": N_BINS, "r_max_A": R_MAX, "pairs": "", "every": every, "file": "rdf.dat"}


def dump_steps(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    return [int(lines[k + 1]) for k, line in enumerate(lines) if line == "ITEM: TIMESTEP"]


def test_compute_rdf_equals_a_histogram_of_the_dumped_frames(tmp_path):
    """108 atoms (box edge ≈ 17 Å < 2 r_max: images beyond the minimum one count, as in LAMMPS)."""
    structure_run(tmp_path, rdf=rdf_variable(100), every=100)
    steps, centres, g = read_rdf(tmp_path / "rdf.dat")
    assert steps.tolist() == dump_steps(tmp_path / "frames.dump") and g.shape == (21, N_BINS)
    edges = np.linspace(0.0, R_MAX, N_BINS + 1)
    np.testing.assert_allclose(centres, (edges[1:] + edges[:-1]) / 2, rtol=1e-12)
    mine = []
    for atoms in read(tmp_path / "frames.dump", format="lammps-dump-text", index=":"):
        n, shells = len(atoms), 4 * np.pi / 3 * np.diff(edges**3)
        counts, _ = np.histogram(neighbor_list("d", atoms, R_MAX), edges)  # ordered pairs i != j
        mine.append(counts / (n * (n - 1) / atoms.get_volume() * shells))
    np.testing.assert_allclose(g, np.array(mine), rtol=1e-9, atol=1e-9)
    peak = centres[np.argmax(g.mean(axis=0))]
    assert 3.5 < peak < 4.0  # argon's first shell near 2^(1/6) σ = 3.81 Å


def test_per_bin_errors_are_the_scatter_over_independent_runs(tmp_path):
    means, errors = [], []
    for seed in range(1, 9):
        structure_run(tmp_path / f"s{seed}", rdf=rdf_variable(), seed=seed)
        mean, sem = block_means(read_rdf(tmp_path / f"s{seed}" / "rdf.dat")[2], 5)
        means.append(mean)
        errors.append(sem)
    shell = slice(12, 48)  # bins from 3 Å, where g > 0
    ratio = np.std(means, axis=0, ddof=1)[shell] / np.sqrt(np.mean(np.square(errors), axis=0))[shell]
    print(f"scatter / reported error per bin: median {np.median(ratio):.2f}")
    assert 0.6 < np.median(ratio) < 1.6


def reference_file(tmp_path: Path, rows: np.ndarray) -> Path:
    path = tmp_path / "g_ref.dat"
    np.savetxt(path, rows, header="r/A g(r) weight")
    return path


def test_residuals_interpolate_the_reference_onto_the_bins_with_weights(tmp_path):
    r = np.linspace(2.0, 9.0, 71)
    table = read_reference_rdf(reference_file(tmp_path, np.column_stack([r, 1 + np.sin(r), r])))
    target = RdfTarget(table, r_max_A=10.0, n_bins=20, denominator=0.1, weights="exp(-r/4)", r_min_A=3.0)
    centres = (np.arange(20) + 0.5) * 0.5
    fitted = (centres >= 3.0) & (centres <= 9.0)
    assert np.array_equal(target.fitted, fitted) and fitted.sum() == 12
    g = 1.2 + np.sin(centres)  # 0.2 above the reference, up to the interpolation's error
    w = np.exp(-centres[fitted] / 4)
    expected = np.sqrt(w / w.sum()) * (g[fitted] - np.interp(centres[fitted], r, 1 + np.sin(r))) / 0.1
    np.testing.assert_allclose(target.residuals(g), expected, rtol=1e-12)
    assert np.sum(np.square(target.residuals(g))) == pytest.approx(4.0, rel=1e-2)  # (0.2/0.1)²: a mean
    independent = 0.01 * np.sqrt(np.sum((w / w.sum()) ** 2))  # bins with independent errors of 0.01
    assert target.rmsd(g, np.full(20, 0.01)) == pytest.approx((0.2, independent), rel=1e-2)
    column = RdfTarget(table, r_max_A=10.0, n_bins=20, denominator=0.1, weights="column")
    np.testing.assert_allclose(column.bin_weights, centres[column.fitted] / centres[column.fitted].sum())
    rows = column.jacobian_rows({"eps": np.ones(20)})
    assert len(rows["eps"]) == column.fitted.sum() == len(column.residuals(g))


def test_bad_references_and_weights_are_named(tmp_path):
    r = np.linspace(2.0, 9.0, 8)
    table = read_reference_rdf(reference_file(tmp_path, np.column_stack([r, np.ones(8)])))
    with pytest.raises(ValueError, match="no bin centre"):
        RdfTarget(table, r_max_A=1.5, n_bins=10, denominator=0.1)
    with pytest.raises(ValueError, match="third column"):
        RdfTarget(table, r_max_A=10.0, n_bins=10, denominator=0.1, weights="column")
    with pytest.raises(ValueError, match=r"only r \(Å\)"):
        RdfTarget(table, r_max_A=10.0, n_bins=10, denominator=0.1, weights="exp(-x)")
    with pytest.raises(ValueError, match="finite weights"):
        RdfTarget(table, r_max_A=10.0, n_bins=10, denominator=0.1, weights="r - 100")
    with pytest.raises(ChemFitError, match="strictly increasing"):
        read_reference_rdf(reference_file(tmp_path, np.column_stack([r[::-1], np.ones(8)])))
    with pytest.raises(ChemFitError, match="cannot read the reference RDF"):
        read_reference_rdf(tmp_path / "missing.dat")


def test_a_run_with_other_bins_than_the_target_is_an_error(tmp_path):
    structure_run(tmp_path, rdf=rdf_variable(), production_steps=400)
    r = np.linspace(0.5, 12.0, 24)
    target = RdfTarget(np.column_stack([r, np.ones(24)]), r_max_A=10.0, n_bins=N_BINS, denominator=0.1)
    with pytest.raises(ChemFitError, match="expected 48 up to 10.0 Å"):
        structure_properties(tmp_path, target, diffusion=False, where="T95")


def test_validation_rows_report_the_rdf_and_diffusion_with_their_tolerances(tmp_path):
    """A validation run's folder (log, rdf.dat, msd.dat of the shipped template) read through the
    config: rdf_rmsd (target 0) and D in properties.csv's rows, their denominators for the report."""
    from test_template_contract import SHIPPED, structure_project

    from chemfit_core.stages.config import load_config
    from chemfit_core.stages.report_checks import denominators
    from chemfit_core.stages.validation import _liquid_rows

    fit = load_config(structure_project(tmp_path, SHIPPED))["fits"]["argon"]
    sp = fit["liquid"]["state_points"][0]
    log = structure_run(tmp_path / "run", rdf=rdf_of_config(fit, sp), msd={"every": 20, "file": "msd.dat"})
    rows = {row["property"]: row for row in _liquid_rows("argon", fit, {}, {sp["name"]: [log]})}
    assert rows["rdf_rmsd"]["target"] == 0.0 and rows["rdf_rmsd"]["fitted_to"]
    assert 0 < rows["rdf_rmsd"]["statistical_uncertainty"] < rows["rdf_rmsd"]["fitted"]
    assert rows["diffusion_1e9_m2_s"]["unit"] == "1e-9 m²/s" and 1.0 < rows["diffusion_1e9_m2_s"]["fitted"] < 5.0
    assert rows["diffusion_1e9_m2_s"]["error"] == pytest.approx(rows["diffusion_1e9_m2_s"]["fitted"] - 2.4)
    limits = denominators(fit)
    assert limits[(sp["name"], "rdf_rmsd")] == 0.1 and limits[(sp["name"], "diffusion_1e9_m2_s")] == 0.3


def rdf_of_config(fit: dict, sp: dict) -> dict:
    from chemfit_core.stages.objective import structure_template_variables

    return structure_template_variables({**fit, "liquid": {**fit["liquid"], "md": {"thermo_every": 20}}}, sp)["rdf"]


def test_the_objective_built_from_the_config_fits_the_rdf_per_bin_and_d(tmp_path):
    """build_objective with the RDF and diffusion targets (short runs): one term's residuals are
    density, ΔHvap, D, then one per fitted bin, and its properties carry rdf_rmsd and D."""
    import yaml
    from test_template_contract import SHIPPED, structure_project

    from chemfit_core import EvaluateContext
    from chemfit_core.stages.config import load_config
    from chemfit_core.stages.objective import build_objective, rdf_of

    path = structure_project(tmp_path, SHIPPED)
    config = yaml.safe_load(path.read_text())
    fit = config["fits"]["argon"]
    fit["liquid"]["md"].update(n_cells=3, melt_steps=400, equilibration_steps=600, production_steps=2000)
    fit["liquid"]["state_points"] = fit["liquid"]["state_points"][:1]
    fit["liquid"]["state_points"][0]["replicas"] = 1
    path.write_text(yaml.safe_dump(config))
    fit = load_config(path)["fits"]["argon"]
    cob, info = build_objective("argon", fit, 1, fit["liquid"]["template"], tmp_path / "work")
    term = cob.objective_functions[0]
    ctx = EvaluateContext()
    term({"epsilon_K": 116.79, "sigma_A": 3.3952}, ctx)
    n_bins = int(rdf_of(fit, fit["liquid"]["state_points"][0]).fitted.sum())
    assert len(ctx.result.residuals) == 3 + n_bins
    assert ctx.result.properties["rdf_rmsd"] > 0 and 0.3 < ctx.result.properties["diffusion_1e9_m2_s"] < 6.0
    assert len(ctx.meta["rdf"]["rdf_g"]) == 45 and info[0]["state_point"] == "normal_boiling_point"


def test_the_rdf_reference_is_an_input_of_the_fit_and_of_provenance(tmp_path, venv_env):
    """Editing the reference curve reruns the fit: rule ``fit`` lists the file among its inputs
    (Snakemake's dry run prints them), as does ``provenance`` (hashed there)."""
    import subprocess

    import yaml

    repo = Path(__file__).resolve().parent.parent
    config = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
    config["fits"]["argon"].pop("solid", None)
    point = config["fits"]["argon"]["liquid"]["state_points"][0]
    point["rdf"] = {"file": "g_of_r.dat", "r_max_A": 8.0, "n_bins": 40, "denominator": 0.1}
    r = np.linspace(0.1, 8.0, 40)
    np.savetxt(tmp_path / "g_of_r.dat", np.column_stack([r, np.ones_like(r)]))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(repo / ".venv" / "bin" / "snakemake"), "-s", str(repo / "Snakefile"), "-n", "--configfile", "config.yaml"],
        cwd=tmp_path,
        env=venv_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    inputs = [line for line in done.stdout.splitlines() if line.strip().startswith("input:")]
    assert any("g_of_r.dat" in line and "fit.json" not in line for line in inputs), inputs  # rule fit
    assert any("g_of_r.dat" in line and "results/argon/fit.json" in line for line in inputs), inputs  # provenance
