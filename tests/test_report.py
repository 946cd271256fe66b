"""The report's pieces on small records built here: number formatting, warnings, tables, figures,
captions, the tables for papers (compiled by a real pdflatex where one is installed) and provenance."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chemfit_core.fit_result import Evaluation, FitResult
from chemfit_core.stages.fit import CHI2_WARNING, fit_warnings
from chemfit_core.stages.provenance import display_path, write_provenance
from chemfit_core.stages.report import caption_html, write_report
from chemfit_core.stages.report_figures import (
    PANELS_PER_ROW,
    convergence_figure,
    properties_figure,
    property_label,
    write_convergence_plot,
)
from chemfit_core.stages.report_tables import (
    Sources,
    figure_flags,
    format_value_uncertainty,
    latex_text,
    parameters_table,
    properties_table,
    property_warnings,
    write_paper_tables,
    yes_no,
)

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = REPO / "workflow" / "report"


# ---- format_value_uncertainty ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "uncertainty", "text"),
    [
        (1396.53, 1.43, "1396.5 ± 1.4"),  # the example: two significant digits of the uncertainty
        (1190.7198, 22.4188, "1191 ± 22"),
        (1190.7, 224.0, "1190 ± 220"),  # uncertainty above ten: the value rounded to tens
        (7.226403, 0.11243, "7.23 ± 0.11"),
        (-204.68, 22.42, "-205 ± 22"),
        (0.0996, 0.0996, "0.10 ± 0.10"),  # 0.0996 rounds up to 0.10: the places follow the rounded value
        (0.5, 12.3, "0 ± 12"),
        (-0.004, 1.43, "0.0 ± 1.4"),  # never "-0.0"
        (0.0, 1.43, "0.0 ± 1.4"),
        (1.234e-8, 5.6e-10, "(1.234 ± 0.056)×10⁻⁸"),  # very small: scientific
        (6.02214076e23, 3.6e16, "(6.02214076 ± 0.00000036)×10²³"),  # very large: scientific
        (3.615, 0.0036, "3.6150 ± 0.0036"),
        (2.0, -0.13, "2.00 ± 0.13"),  # a negative uncertainty counts by its size
    ],
)
def test_value_and_uncertainty_are_rounded_to_the_uncertainty(value, uncertainty, text):
    assert format_value_uncertainty(value, uncertainty) == text


@pytest.mark.parametrize(
    ("value", "uncertainty", "text"),
    [
        (1396.53, None, "1396.53"),  # no uncertainty: six significant digits
        (1396.53, math.nan, "1396.53"),  # NaN: none
        (3.6150000000000015, None, "3.615"),
        (1396.53, 0.0, "1396.53 ± 0"),  # zero: exact, said so
        (1396.53, math.inf, "1396.53 ± ∞"),
        (1.3322676295501878e-15, None, "1.33227×10⁻¹⁵"),
        (2.5e7, None, "2.5×10⁷"),
        (math.nan, 1.0, ""),  # a missing value: an empty cell, never "nan"
        (None, None, ""),
        ("text", None, ""),
        (math.inf, None, "∞"),
        (-math.inf, 1.0, "-∞"),
    ],
)
def test_edge_cases_of_the_formatter(value, uncertainty, text):
    assert format_value_uncertainty(value, uncertainty) == text


def test_formatter_options_and_flags():
    assert format_value_uncertainty(15.592088, significant=3) == "15.6"
    assert format_value_uncertainty(math.nan, missing="—") == "—"
    assert format_value_uncertainty(1396.53, 1.43, digits=1) == "1397 ± 1"
    assert [yes_no(v) for v in (True, False, "True", "False", np.True_, 1, None, math.nan)] == [
        "yes",
        "no",
        "yes",
        "no",
        "yes",
        "yes",
        "",
        "",
    ]


def test_latex_text_escapes_units_and_scientific_notation():
    assert latex_text("(1.234 ± 0.056)×10⁻⁸") == r"(1.234 $\pm$ 0.056)$\times 10^{-8}$"
    assert latex_text("kg/m³ Å error (%) a_b") == r"kg/m\textsuperscript{3} \AA{} error (\%) a\_b"


# ---- records built here ---------------------------------------------------------------------


def _crystal_config(budget: int = 40) -> dict:
    return {
        "description": "Morse copper, a test record",
        "element": "Cu",
        "potential": {"form": "morse", "cutoff_A": 8.0},
        "parameters": {
            "D_eV": {"initial": 0.32, "lower": 0.2, "upper": 0.5, "unit": "eV", "reference": 0.3429},
            "alpha_invA": {"initial": 1.3, "lower": 1.0, "upper": 1.8, "unit": "1/Å"},
            "r0_A": {"initial": 2.9, "lower": 2.6, "upper": 3.1, "unit": "Å"},
        },
        "crystal": {
            "references": {
                "a0_A": {"value": 3.615, "denominator": 0.003615},
                "Ec_eV": {"value": 3.54, "denominator": 0.0354},
                "B_GPa": {"value": 138.3, "denominator": 1.383},
            }
        },
        "optimizer": {"method": "least_squares", "max_evaluations": budget},
    }


def _record(config: dict, fitted: dict, objective: float, n_residuals: int = 3, success: bool = True) -> dict:
    names = list(config["parameters"])
    initial = {n: p["initial"] for n, p in config["parameters"].items()}
    history = [
        {
            "index": k,
            "parameters": initial if k == 0 else fitted,
            "objective": objective * (10.0 if k == 0 else 1.0),
            "terms": [objective * (10.0 if k == 0 else 1.0)],
            "term_names": ["crystal"],
            "residuals": [0.1] * n_residuals,
            "error": None,
        }
        for k in range(3)
    ]
    covariance = np.diag([0.0025, 0.011, 0.0077]) ** 2
    covariance[0, 1] = covariance[1, 0] = 0.5 * 0.0025 * 0.011
    return {
        "fit": "copper",
        "config": config,
        "history": history,
        "method": "trf",
        "message": "`gtol` termination condition is satisfied.",
        "success": success,
        "n_evaluations": 3,
        "objective": objective,
        "wall_time_s": 1.5,
        "n_workers": 1,
        "evaluator": "threads",
        "seed": 1,
        "config_sha256": "a" * 64,
        "covariance": covariance.tolist(),
        "parameter_names": names,
        "parameters": fitted,
    }


def _params(config: dict, fitted: dict, warnings: list | None = None) -> dict:
    entry = {}
    for name, spec in config["parameters"].items():
        entry[name] = {"value": fitted[name], "unit": spec["unit"], "initial": spec["initial"]}
        entry[name]["standard_error"] = {"D_eV": 0.0025, "alpha_invA": 0.011, "r0_A": 0.0077}[name]
        if "reference" in spec:
            entry[name].update(
                reference=spec["reference"],
                reference_source="Girifalco, Weizer (1959)",
                deviation_from_reference_percent=100 * (fitted[name] / spec["reference"] - 1),
            )
    return {"copper": {"parameters": entry, "converged": True, "warnings": warnings or []}}


def _row(prop, unit, fitted_to, target, fitted, state="crystal", **extra):
    return {
        "fit": "copper",
        "state_point": state,
        "temperature_K": np.nan,
        "pressure_bar": np.nan,
        "property": prop,
        "unit": unit,
        "fitted_to": fitted_to,
        "target": target,
        "initial": extra.pop("initial", np.nan),
        "fitted": fitted,
        "error": fitted - target,
        "error_percent": 100 * (fitted / target - 1),
        "statistical_uncertainty": np.nan,
        "parameter_uncertainty": extra.pop("sigma", np.nan),
        "replicas": np.nan,
        "source": extra.pop("source", ""),
    }


def _properties(a0: float = 3.6150, c44: float = 121.4, round_trip: float = 3e-15) -> pd.DataFrame:
    rows = [
        _row("a0_A", "Å", True, 3.615, a0, initial=3.58, sigma=0.0036, source="experiment (Mishin 2001)"),
        _row("Ec_eV", "eV/atom", True, 3.54, 3.54, initial=3.50, sigma=0.035),
        _row("B_GPa", "GPa", True, 138.3, 138.3, initial=128.3, sigma=1.4),
        _row("C44_GPa", "GPa", False, 75.8, c44, sigma=1.1),
        _row("E_bcc_eV", "eV/atom", False, np.nan, 0.0207),
        _row("max_relative_difference_energy", "1", False, np.nan, round_trip, state="lammps_round_trip"),
    ]
    return pd.DataFrame(rows)


FITTED = {"D_eV": 0.3423, "alpha_invA": 1.3545, "r0_A": 2.8735}


# ---- warnings -------------------------------------------------------------------------------


def _result(fitted, objective, success, message, n_evaluations, n_residuals=8):
    history = [
        Evaluation(index=k, parameters=dict(fitted), objective=objective * (2 - (k == n_evaluations - 1)))
        for k in range(n_evaluations)
    ]
    for e in history:
        e.residuals = [1.0] * n_residuals
    return FitResult(
        parameters=dict(fitted),
        objective=objective,
        success=success,
        message=message,
        method="trf",
        n_evaluations=n_evaluations,
        wall_time_s=1.0,
        history=history,
    )


def test_a_bad_fit_is_warned_of_bounds_budget_and_chi2():
    config = _crystal_config(budget=3)
    fitted = {"D_eV": 0.5, "alpha_invA": 1.005, "r0_A": 2.9}  # at the upper bound; near the lower one
    result = _result(fitted, 800.0, False, "The maximum number of function evaluations is exceeded.", 3)
    warnings = fit_warnings(config, fitted, result)
    kinds = [w["kind"] for w in warnings]
    assert kinds == ["bound", "bound", "budget", "chi2"]
    assert "D_eV = 0.5 is at its upper bound" in warnings[0]["message"]
    assert "alpha_invA = 1.005 is near its lower bound" in warnings[1]["message"]
    assert "3 of 3 evaluations" in warnings[2]["message"]
    assert warnings[3]["chi2_per_dof"] == pytest.approx(800.0 / (8 - 3)) and warnings[3]["chi2_per_dof"] > CHI2_WARNING
    json.dumps(warnings)  # params.json holds them


def test_a_good_fit_has_no_warnings_and_a_stalled_one_says_so():
    config = _crystal_config()
    assert fit_warnings(config, FITTED, _result(FITTED, 1e-20, True, "converged", 12)) == []
    stalled = fit_warnings(config, FITTED, _result(FITTED, 1e-20, False, "line search failed", 12))
    assert [w["kind"] for w in stalled] == ["not_converged"] and "line search failed" in stalled[0]["message"]
    # without residuals (a term that gives none) no χ² is claimed
    result = _result(FITTED, 1e6, True, "converged", 12)
    for e in result.history:
        e.residuals = None
    assert fit_warnings(config, FITTED, result) == []


def test_params_summary_writes_the_warnings():
    from chemfit_core.stages.fit import params_summary

    config = _crystal_config(budget=3)
    fitted = {"D_eV": 0.5, "alpha_invA": 1.3, "r0_A": 2.9}
    result = _result(fitted, 800.0, False, "The maximum number of function evaluations is exceeded.", 3)
    summary = params_summary("copper", config, fitted, result)["copper"]
    assert [w["kind"] for w in summary["warnings"]] == ["bound", "budget", "chi2"]


def test_property_warnings_cover_tolerances_references_and_the_round_trip():
    config = _crystal_config()
    quiet = property_warnings(_properties(), "copper", config)
    assert [w["kind"] for w in quiet] == ["unfitted", "no_reference"]  # C44 60 % off; E_bcc without reference
    assert "C44_GPa +60.2 %" in quiet[0]["message"] and "E_bcc_eV" in quiet[1]["message"]
    loud = property_warnings(_properties(a0=3.64, c44=80.0, round_trip=2e-5), "copper", config)
    kinds = [w["kind"] for w in loud]
    assert kinds == ["fitted_property", "no_reference", "round_trip"]  # C44 5.5 % off: within 10 %
    assert "a0_A misses its target by 6.9 × its tolerance 0.003615 Å" in loud[0]["message"]
    assert "2×10⁻⁵" in loud[2]["message"]


# ---- tables and the HTML report -------------------------------------------------------------


def test_tables_show_standard_errors_yes_no_and_no_nan():
    config = _crystal_config()
    sources = Sources()
    parameters = parameters_table(_params(config, FITTED)["copper"], config, sources)
    assert parameters.columns[2] == "fitted ± s.e." and parameters.rows[0][2] == "0.3423 ± 0.0025"
    assert parameters.rows[0][4] == "[0.2, 0.5]" and parameters.rows[0][5] == "0.3429 [1]"
    table = properties_table(_properties(), "copper", sources)
    assert "state point" not in table.columns  # crystal rows have none
    assert [r[0] for r in table.rows] == ["a0_A", "Ec_eV", "B_GPa", "C44_GPa", "E_bcc_eV"]  # no round trip
    assert {r[table.columns.index("fitted to")] for r in table.rows} == {"yes", "no"}
    a0 = table.rows[0]
    assert a0[table.columns.index("fitted ± σ")] == "3.6150 ± 0.0036"
    assert a0[table.columns.index("error (%)")] == "0.00 ± 0.10"  # the error in % beside the absolute one
    assert "nan" not in json.dumps(table.rows).lower()
    assert sources.items == ["Girifalco, Weizer (1959)", "experiment (Mishin 2001)"]


def test_report_opens_with_warnings_and_fits_a_crystal_fit(tmp_path):
    config = _crystal_config(budget=3)
    record = _record(config, FITTED, 500.0, success=False)
    record["message"] = "The maximum number of function evaluations is exceeded."
    warnings = [{"kind": "budget", "message": "the optimiser stopped on its budget (3 of 3 evaluations)"}]
    out = write_report([record], _params(config, FITTED, warnings), _properties(), tmp_path / "report.html")
    page = out.read_text()
    text = re.sub(r"<[^>]+>", " ", page.split("<body>")[1])
    assert page.index("id='warnings'") < page.index("Fitted parameters")
    assert "stopped on its budget" in text and "Unfitted-property errors" in text and "C44_GPa" in text
    assert "0.3423 ± 0.0025" in text  # standard error from params.json
    assert "correlation" in text and "+0.50" in text  # the correlation matrix of the least-squares fit
    assert "True" not in text and "False" not in text and not re.search(r"\bnan\b", text, re.I)
    assert "block averages" not in text  # a crystal fit has no validation runs
    assert "χ² per degree of freedom" in text
    assert "alt='convergence of copper'" in page and "alt='terms and properties of copper'" in page


def test_a_liquid_fit_gets_the_validation_runs_sentence(tmp_path):
    config = _crystal_config()
    del config["crystal"]
    config["liquid"] = {
        "state_points": [
            {
                "name": "nbp",
                "temperature_K": 87.3,
                "pressure_bar": 1.0,
                "density_kg_m3": {"value": 1395.4, "denominator": 10.0},
            }
        ]
    }
    record = _record(config, FITTED, 1.0)
    props = pd.DataFrame(
        [
            {
                **_row("density_kg_m3", "kg/m³", True, 1395.4, 1396.53, state="nbp"),
                "temperature_K": 87.3,
                "pressure_bar": 1.0,
                "statistical_uncertainty": 1.43,
                "replicas": 2,
            }
        ]
    )
    page = write_report([record], _params(config, FITTED), props, tmp_path / "report.html").read_text()
    assert "block averages" in page and "1396.5 ± 1.4" in page and "nbp (87.3 K, 1 bar)" in page


# ---- figures and captions -------------------------------------------------------------------


def test_properties_figure_labels_crystal_rows_without_nan_and_no_red_without_validation():
    record = _record(_crystal_config(), FITTED, 1.0)
    props = _properties()
    fitted_only = props[props["fitted_to"]]
    fig = properties_figure(record, fitted_only)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels == ["a0_A", "Ec_eV", "B_GPa"]
    assert "red" not in fig.axes[1].get_title()
    fig = properties_figure(record, props)
    assert "validation (red)" in fig.axes[1].get_title()
    assert not any("nan" in t.get_text() for t in fig.axes[1].get_yticklabels())
    solid = {"property": "a0_A", "state_point": "solid", "structure": "fcc"}
    assert property_label(solid) == "a0_A (fcc, solid)"
    assert property_label({"property": "a0_A", "state_point": float("nan")}) == "a0_A"


def test_convergence_of_six_parameters_is_small_multiples_not_one_row(tmp_path):
    names = ["D_eV", "alpha_invA", "r0_A", "A_eV", "B_eV", "beta"]
    config = {"parameters": {n: {"initial": 1.0, "lower": 0.0, "upper": 2.0, "unit": ""} for n in names}}
    history = [
        {"index": k, "parameters": {n: 1.0 + 0.1 * k for n in names}, "objective": 10.0 / (k + 1)} for k in range(4)
    ]
    record = {"fit": "six", "method": "trf", "config": config, "history": history}
    fig = convergence_figure(record)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 7
    rows = {round(ax.get_position().y0, 3) for ax in shown}
    columns = {round(ax.get_position().x0, 3) for ax in shown}
    assert len(rows) == 2 and len(columns) <= PANELS_PER_ROW
    png = write_convergence_plot(record, tmp_path / "convergence.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "convergence.pdf").read_bytes()[:5] == b"%PDF-"  # vector, beside the PNG


def test_captions_follow_what_the_figures_show():
    crystal = _crystal_config()
    flags = figure_flags(crystal)
    assert flags == {"liquid": False, "crystal": True, "structures": False, "references": True, "validation": False}
    text = caption_html(CAPTIONS / "properties.rst", "copper", flags)
    assert not re.search(r"\bred\b", text) and "copper" in text and "statistical uncertainty of MD" not in text
    crystal["crystal"].update(validate=["C44_GPa"], validation_references={"C44_GPa": {"value": 75.8}})
    text = caption_html(CAPTIONS / "properties.rst", "copper", figure_flags(crystal))
    assert "red for validation properties" in text
    structures = {"structures": {"file": "x.extxyz"}, "parameters": {}}
    text = caption_html(CAPTIONS / "properties.rst", "rec", figure_flags(structures))
    assert "Right:" not in text and "parity plot" in text


# ---- tables for papers ----------------------------------------------------------------------


def _paper_tables(tmp_path: Path) -> dict[str, Path]:
    config = _crystal_config()
    out = {
        f"{kind}_{ext}": tmp_path / f"{kind}.{ext}"
        for kind in ("parameters", "properties")
        for ext in ("tex", "md", "csv")
    }
    write_paper_tables(_params(config, FITTED), _properties(), [_record(config, FITTED, 1.0)], out)
    return out


def test_paper_tables_are_booktabs_markdown_and_csv(tmp_path):
    out = _paper_tables(tmp_path)
    tex = out["parameters_tex"].read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"0.3423 $\pm$ 0.0025" in tex and r"\AA{}" in tex
    assert tex.count(r"\\") == 4  # header and three parameters
    markdown = out["properties_md"].read_text()
    assert "| property | unit | fitted to |" in markdown and "| a0_A | Å | yes |" in markdown
    assert "[1] experiment (Mishin 2001)" in markdown
    parameters = pd.read_csv(out["parameters_csv"])
    assert list(parameters["standard_error"]) == [0.0025, 0.011, 0.0077]
    properties = pd.read_csv(out["properties_csv"])
    assert "max_relative_difference_energy" not in set(properties["property"])
    assert set(properties["fitted_to"]) == {"yes", "no"}


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (texlive-latex-base)")
def test_paper_tables_compile_with_pdflatex(tmp_path):
    out = _paper_tables(tmp_path)
    document = tmp_path / "paper.tex"
    document.write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n\\begin{document}\n"
        + "".join(f"\\input{{{out[k].name}}}\n\n" for k in ("parameters_tex", "properties_tex"))
        + "\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "paper.pdf").read_bytes()[:5] == b"%PDF-"


# ---- provenance -----------------------------------------------------------------------------


def test_provenance_paths_are_relative_and_name_what_each_hash_covers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "structures.extxyz").write_text("1\n\nCu 0 0 0\n")
    potential = tmp_path / "results" / "recovery" / "potential" / "fitted.eam.alloy"
    potential.parent.mkdir(parents=True)
    potential.write_text("setfl\n")
    listed = [{"name": "potential.lammps"}, {"name": "potential/fitted.eam.alloy"}]  # the include file is missing
    (tmp_path / "results" / "recovery" / "params.json").write_text(
        json.dumps({"recovery": {"potential_files": listed}})
    )
    fit_json = tmp_path / "fit.json"
    fit_json.write_text(json.dumps({"fit": "recovery", "config_sha256": "b" * 64, "terms": []}))
    config = {"seed": 1, "fits": {"recovery": {"element": "Cu", "potential": {"form": "eam/analytic"}}}}
    template = REPO / "chemfit_core" / "data" / "templates" / "lj_liquid_npt.lammps.j2"
    inputs = [str(tmp_path / "structures.extxyz"), str(template)]
    record = write_provenance(tmp_path / "provenance.json", config, inputs, [fit_json], REPO)
    files = {f["path"]: f for f in record["files"]}
    assert set(files) == {
        "structures.extxyz",
        "chemfit_core/data/templates/lj_liquid_npt.lammps.j2",
        "results/recovery/potential/fitted.eam.alloy",
    }
    assert files["results/recovery/potential/fitted.eam.alloy"]["role"] == "fitted potential of recovery"
    assert record["fit_config_sha256"] == {"recovery": "b" * 64}
    assert "whole" in record["hashes"]["config_sha256"] and "fit.json" in record["hashes"]["fit_config_sha256"]
    assert display_path("relative/file") == "relative/file" and display_path("/elsewhere/x") == "/elsewhere/x"
