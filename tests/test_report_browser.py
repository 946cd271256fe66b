"""The report of real workflow runs in a real headless Chromium at a 1100 px wide window: the
reduced default (liquid) fit, a crystal fit, a structures fit and a deliberately bad fit.

Every table cell must lie inside the viewport with its content inside the cell (no hidden
columns), no text or label may read "nan", and the bad fit (3 evaluations from a far start, one
parameter at its bound) must be warned of — budget, bound, χ² — at the top of the report and in
params.json. Screenshots of whole pages are written to each run's results/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
WIDTH = 1100

pytestmark = pytest.mark.slow


def _why_no_browser() -> str | None:
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "no chromium/chromedriver, and installing their Debian packages needs root and apt-get"
    return None


def _browser(width: int = WIDTH, height: int = 1000):
    """Debian's chromium driven by its chromedriver (installed by tests/browser/install_chromium.sh
    when missing); Selenium offline: it must not look for a driver on the network."""
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    installed = subprocess.run(
        ["bash", str(REPO / "tests" / "browser" / "install_chromium.sh")], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    paths = dict(line.split(" ", 1) for line in installed.stdout.splitlines())
    options = webdriver.ChromeOptions()
    options.binary_location = paths["chromium"]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(paths["chromedriver"]), options=options)


def _reduce_crystal(config: dict) -> None:
    fit = config["fits"]["copper_morse"]
    fit["crystal"].update(fmax=1e-5, validate=["C44_GPa", "E_bcc_eV"])
    fit["potential"]["cutoff_A"] = 8.0
    fit["optimizer"]["max_evaluations"] = 30


def _bad_fit(config: dict) -> None:
    """The recovery fit from far off, its budget 3 evaluations, beta started at its upper bound
    where the far start's gradient holds it."""
    parameters = config["fits"]["recovery"]["parameters"]
    parameters["D_eV"]["initial"] = 0.15
    parameters["alpha_invA"]["initial"] = 2.5
    parameters["r0_A"]["initial"] = 3.2
    parameters["beta"].update(initial=5.5, upper=5.5)
    config["fits"]["recovery"]["optimizer"]["max_evaluations"] = 3


RUNS = {
    "default": (REPO / ".test" / "config" / "config.yaml", None),
    "crystal": (REPO / "config" / "examples" / "copper_morse.yaml", _reduce_crystal),
    "structures": (REPO / "config" / "examples" / "recovery.yaml", None),
    "bad": (REPO / "config" / "examples" / "recovery.yaml", _bad_fit),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each configuration of :data:`RUNS` run through the whole workflow in its own folder (lazily)."""
    done: dict[str, Path] = {}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(name: str) -> Path:
        if name not in done:
            source, change = RUNS[name]
            workdir = tmp_path_factory.mktemp(name)
            config = yaml.safe_load(source.read_text())
            if change:
                change(config)
            (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            if name == "default":
                shutil.copy(source.parent / "vacancy.extxyz", workdir)
            command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "config.yaml"]
            finished = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
            assert finished.returncode == 0, finished.stderr[-3000:]
            done[name] = workdir
        return done[name]

    return run


LAYOUT = """
const width = document.documentElement.clientWidth;
const cells = Array.from(document.querySelectorAll('td, th'));
const outside = cells.filter(c => { const r = c.getBoundingClientRect();
    return r.left < -0.5 || r.right > width + 0.5 || c.scrollWidth > c.clientWidth + 1; })
  .map(c => c.closest('table').querySelector('tr').innerText.slice(0, 60) + ' | ' + c.innerText.slice(0, 40));
const labels = [document.body.innerText, document.title,
  ...Array.from(document.images).map(i => i.alt), ...cells.map(c => c.innerText)];
return {width: width, scroll: document.documentElement.scrollWidth, cells: cells.length, outside: outside,
  nan: labels.filter(t => /\\bnan\\b/i.test(t)).map(t => t.slice(0, 80)),
  images: Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 300,
    shown: i.getBoundingClientRect().right <= width + 0.5})),
  warnings: document.getElementById('warnings').getBoundingClientRect().top,
  firstFit: document.querySelector("h2[id^='fit-']").getBoundingClientRect().top};
"""


@pytest.mark.skipif(_why_no_browser() is not None, reason=str(_why_no_browser()))
@pytest.mark.parametrize("name", list(RUNS))
def test_report_fits_1100_px_and_reads_no_nan(runs, name):
    workdir = runs(name)
    browser = _browser()
    try:
        browser.get((workdir / "results" / "report.html").as_uri())
        layout = browser.execute_script(LAYOUT)
        assert layout["cells"] > 20, layout
        assert layout["outside"] == [], f"cells outside the {WIDTH} px page or clipped: {layout['outside']}"
        assert layout["scroll"] <= layout["width"], "the page scrolls sideways"
        assert layout["nan"] == [], layout["nan"]
        assert layout["images"] and all(i["ok"] and i["shown"] for i in layout["images"]), layout["images"]
        assert layout["warnings"] < layout["firstFit"]  # the warnings open the report
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(WIDTH, height + 100)
        shots = workdir / "results" / "screenshots"
        shots.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(shots / f"report_{name}.png"))
    finally:
        browser.quit()
    print(f"screenshot: {shots / f'report_{name}.png'}")


def test_a_bad_fit_is_warned_of_in_params_json_and_at_the_top_of_the_report(runs):
    results = runs("bad") / "results"
    warnings = json.loads((results / "params.json").read_text())["recovery"]["warnings"]
    kinds = [w["kind"] for w in warnings]
    assert {"bound", "budget", "chi2"} <= set(kinds), warnings
    bound = next(w for w in warnings if w["kind"] == "bound")
    assert bound["parameter"] == "beta" and "upper bound" in bound["message"]
    page = (results / "report.html").read_text()
    top = page[page.index("id='warnings'") : page.index("<h2 id='fit-")]
    assert "beta = 5.5 is at its upper bound" in top
    assert "stopped on its budget (3 of 3 evaluations" in top
    assert "χ² per degree of freedom" in top
    assert "fitted property energy_rmse_eV_atom misses its target" in top  # a property outside its tolerance


def test_good_fits_report_no_fit_warnings(runs):
    params = json.loads((runs("structures") / "results" / "params.json").read_text())
    assert params["recovery"]["warnings"] == []
    assert "No warnings" in (runs("structures") / "results" / "report.html").read_text()


def test_crystal_and_structures_reports_say_what_their_numbers_are(runs):
    crystal = (runs("crystal") / "results" / "report.html").read_text()
    assert "block averages" not in crystal and "validation runs" not in crystal
    assert "Crystal properties are computed in-process" in crystal
    assert "correlation" in crystal and "fitted ± s.e." in crystal  # least squares: standard errors, correlations
    assert re.search(r"D_eV</td><td class='text'>eV</td><td>0\.34\d+ ± 0\.00\d+</td>", crystal)
    assert "red for validation properties" in crystal  # C44 has a reference and is not fitted
    structures = (runs("structures") / "results" / "report.html").read_text()
    assert "block averages" not in structures and not re.search(r"\bred\b", structures.split("<body>")[1])
    assert "alt='structures_parity of recovery'" in structures
    default = (runs("default") / "results" / "report.html").read_text()
    assert "block averages" in default and ">True<" not in default and ">yes<" in default


def test_paper_tables_and_vector_figures_are_written(runs):
    for name in ("default", "crystal", "structures"):
        results = runs(name) / "results"
        for table in ("parameters", "properties"):
            for ext in ("tex", "md", "csv"):
                assert (results / "tables" / f"{table}.{ext}").stat().st_size > 100, (name, table, ext)
            assert "\\toprule" in (results / "tables" / f"{table}.tex").read_text()
        for fit in json.loads((results / "params.json").read_text()):
            for figure in ("convergence", "properties"):
                assert (results / fit / f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"
    assert (runs("structures") / "results" / "recovery" / "structures_parity.pdf").is_file()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (texlive-latex-base)")
def test_paper_tables_of_real_runs_compile(runs, tmp_path):
    inputs = []
    for name in ("default", "crystal", "structures"):
        for table in ("parameters", "properties"):
            target = tmp_path / f"{name}_{table}.tex"
            shutil.copy(runs(name) / "results" / "tables" / f"{table}.tex", target)
            inputs.append(f"\\input{{{target.name}}}\n\n")
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\begin{document}\n\\resizebox{\\textwidth}{!}{\\begin{minipage}{1.6\\textwidth}\n"
        + "".join(inputs)
        + "\\end{minipage}}\n\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_provenance_names_its_hashes_relative_paths_and_the_fitted_potential(runs):
    record = json.loads((runs("structures") / "results" / "provenance.json").read_text())
    assert set(record["hashes"]) >= {"config_sha256", "fit_config_sha256"}
    fit = json.loads((runs("structures") / "results" / "recovery" / "fit.json").read_text())
    assert record["fit_config_sha256"] == {"recovery": fit["config_sha256"]} != record["config_sha256"]
    paths = {f["path"]: f for f in record["files"]}
    params = json.loads((runs("structures") / "results" / "recovery" / "params.json").read_text())
    named = {f"results/recovery/{f['name']}": f["sha256"] for f in params["recovery"]["potential_files"]}
    assert "results/recovery/potential/fitted.eam.alloy" in named  # the setfl beside the include file
    for path, sha256 in named.items():  # provenance hashes the files params.json names
        assert paths[path]["role"] == "fitted potential of recovery" and paths[path]["sha256"] == sha256
    default = json.loads((runs("default") / "results" / "provenance.json").read_text())
    assert {f["path"] for f in default["files"]} == {
        "chemfit_core/data/templates/lj_liquid_npt.lammps.j2",
        "vacancy.extxyz",
        "results/argon/potential.lammps",
    }
    page = (runs("default") / "results" / "report.html").read_text()
    assert "config sha256 (whole configuration)" in page and "fit-section sha256 of argon" in page
    assert str(REPO) not in page.split("<h2>Provenance</h2>")[1].split("<h3>Files</h3>")[1]
