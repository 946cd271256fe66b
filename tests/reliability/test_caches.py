"""The caches verify what they replay: a damaged, edited or foreign entry is a logged miss,
computed again, never a traceback and never a silently different result.

Evaluation-cache entries are damaged the ways a full disk, a kill, a careless hand or a copy
damage them (``[]``, ``{}``, cut short, objective edited to 1.0 or NaN, another entry's file,
an entry from before the checksums); run-cache entries of real LAMMPS runs get their log cut
to 60 %, emptied, or its densities raised 10 %.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import pytest
from test_faults import MD_TEMPLATE

from chemfit_core import EvaluateContext, Fitter, LammpsQuantityComputer
from chemfit_core.cache import MANIFEST, EvaluationCache, OutputCache, record_checksum
from chemfit_core.external.lammps import check_log

FLAT = {"a": 1.25, "b": -0.5}
RECORD = {
    "index": 0,
    "parameters": dict(FLAT),
    "objective": 2.5,
    "terms": [1.0, 1.5],
    "term_names": ["t0", "t1"],
    "wall_time_s": 0.1,
    "error": None,
    "term_results": None,
    "residuals": None,
    "jacobian": None,
}


def entry_of(cache: EvaluationCache) -> Path:
    (path,) = cache.directory.glob("*.json")
    return path


def rewrite(path: Path, change) -> None:
    """Apply ``change`` to the stored record and recompute the checksum (a consistent forgery)."""
    entry = json.loads(path.read_text())
    change(entry["record"])
    entry["sha256"] = record_checksum(entry["record"])
    path.write_text(json.dumps(entry))


def edited_objective(value: float):
    def damage(path: Path) -> None:
        entry = json.loads(path.read_text())
        entry["record"]["objective"] = value  # by hand: the checksum is left as it was
        path.write_text(json.dumps(entry))

    return damage


DAMAGE = {
    "replaced by []": lambda path: path.write_text("[]"),
    "replaced by {}": lambda path: path.write_text("{}"),
    "emptied": lambda path: path.write_text(""),
    "cut to 60 %": lambda path: path.write_text(path.read_text()[: int(0.6 * len(path.read_text()))]),
    "not UTF-8": lambda path: path.write_bytes(b"\xff\xfe\x00garbage"),
    "objective edited to 1.0": edited_objective(1.0),
    "objective edited to NaN": edited_objective(math.nan),
    "a directory in its place": lambda path: (path.unlink(), path.mkdir()),
    "the bare record of the old format": lambda path: path.write_text(json.dumps(RECORD)),
    "record replaced by a list, checksum recomputed": lambda path: path.write_text(
        json.dumps({"format": 2, "key": path.stem, "sha256": record_checksum([1, 2]), "record": [1, 2]})
    ),
    "NaN objective, checksum recomputed": lambda path: rewrite(path, lambda r: r.update(objective=math.nan)),
    "other parameters, checksum recomputed": lambda path: rewrite(path, lambda r: r["parameters"].update(a=9.0)),
    "unknown field, checksum recomputed": lambda path: rewrite(path, lambda r: r.update(colour="blue")),
    "terms of the wrong type, checksum recomputed": lambda path: rewrite(path, lambda r: r.update(terms="many")),
    "a failed evaluation, checksum recomputed": lambda path: rewrite(path, lambda r: r.update(error="boom")),
}


def test_a_stored_evaluation_is_replayed_exactly(tmp_path):
    cache = EvaluationCache(tmp_path, "ns")
    cache.put(FLAT, RECORD)
    assert cache.get(FLAT) == RECORD
    entry = json.loads(entry_of(cache).read_text())
    assert entry["key"] == cache.key(FLAT) and entry["sha256"] == record_checksum(RECORD)
    assert cache.get({"a": 1.25 + 1e-15, "b": -0.5}) is None  # keys are exact: no rounding


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_evaluation_entry_is_a_logged_miss(tmp_path, caplog, damage):
    cache = EvaluationCache(tmp_path, "ns")
    cache.put(FLAT, RECORD)
    DAMAGE[damage](entry_of(cache))
    with caplog.at_level(logging.WARNING, logger="chemfit_core.cache"):
        assert cache.get(FLAT) is None
    assert (cache.hits, cache.misses, cache.rejected) == (0, 1, 1)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(tmp_path) in warning and "computed again" in warning
    cache.put(FLAT, RECORD)  # recomputed and stored again: whole
    assert cache.get(FLAT) == RECORD


def test_an_entry_copied_under_another_key_is_a_miss(tmp_path, caplog):
    cache = EvaluationCache(tmp_path, "ns")
    cache.put(FLAT, RECORD)
    other = {"a": 2.0, "b": -0.5}
    shutil.copy(entry_of(cache), cache.path(other))
    with caplog.at_level(logging.WARNING, logger="chemfit_core.cache"):
        assert cache.get(other) is None
    assert "stored under key" in caplog.text
    assert cache.get(FLAT) == RECORD


def test_a_missing_entry_is_a_quiet_miss(tmp_path, caplog):
    cache = EvaluationCache(tmp_path, "ns")
    with caplog.at_level(logging.WARNING, logger="chemfit_core.cache"):
        assert cache.get(FLAT) is None
    assert caplog.records == [] and (cache.misses, cache.rejected) == (1, 0)


def quadratic(p):
    return (p["x"] - 1.3) ** 2 + 3.0 * (p["y"] + 0.4) ** 2 + 0.5 * (p["x"] - 1.3) * (p["y"] + 0.4)


def fit(cache_dir: Path) -> tuple[dict, Fitter]:
    fitter = Fitter(quadratic, {"x": 0.0, "y": 0.0}, progress=False, cache=EvaluationCache(cache_dir, "quadratic"))
    params = fitter.fit_scipy(method="Nelder-Mead", options={"maxfev": 60, "xatol": 1e-10, "fatol": 1e-12})
    return params, fitter


def test_damaged_entries_never_change_the_fitters_result(tmp_path):
    """A fit replayed from a cache whose entries were damaged every way above gives the result of
    the uninterrupted fit, bit for bit: each damaged entry is computed again, the others replayed."""
    expected, reference = fit(tmp_path / "cache")
    entries = sorted((tmp_path / "cache").glob("*.json"))
    assert len(entries) == len(reference.history) == 60
    for path, damage in zip(entries[::3], DAMAGE.values()):  # every third entry, a different damage each
        damage(path)
    damaged = len(list(zip(entries[::3], DAMAGE)))
    params, fitter = fit(tmp_path / "cache")
    assert params == expected
    assert [e.objective for e in fitter.history] == [e.objective for e in reference.history]
    assert fitter.n_replayed == len(entries) - damaged and fitter.cache.rejected == damaged
    again, fitter = fit(tmp_path / "cache")  # the recomputed entries were stored again
    assert again == expected and fitter.n_replayed == len(entries)


# -- the run cache, with real LAMMPS runs -------------------------------------------------------------
TEMPLATE = MD_TEMPLATE.replace(
    "thermo_style custom step atoms pe press", "thermo_style custom step atoms pe press density"
)


def evaluate(tmp_path: Path, cache: OutputCache) -> tuple[list[float], str]:
    computer = LammpsQuantityComputer(
        TEMPLATE, tmp_path / "runs", template_variables={"seed": 1, "sigma": 3.4}, output_cache=cache
    )
    ctx = EvaluateContext()
    thermo = computer({"dt": 5.0}, ctx)["thermo"][-1]
    return thermo["Density"].tolist() + thermo["PotEng"].tolist(), ctx.meta["output_cache"]


def the_log(cache_dir: Path) -> Path:
    (entry,) = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
    return entry / "log.lammps"


def raise_densities(path: Path) -> None:
    """Density column (the last) of every thermo line times 1.1, the line otherwise as it was."""
    lines, in_thermo = [], False
    for line in path.read_text().splitlines(keepends=True):
        if line.strip().startswith("Step"):
            in_thermo = True
        elif line.startswith("Loop time"):
            in_thermo = False
        elif in_thermo and line.strip()[:1].isdigit():
            head, density = line.rstrip().rsplit(maxsplit=1)
            line = f"{head}   {float(density) * 1.1:.7f}\n"
        lines.append(line)
    path.write_text("".join(lines))


def cut_consistently(path: Path) -> None:
    """The log cut to 60 % and the manifest rewritten to match: only the log check can tell."""
    from chemfit_core.results import file_sha256

    path.write_text(path.read_text()[: int(0.6 * len(path.read_text()))])
    manifest = json.loads((path.parent / MANIFEST).read_text())
    manifest["files"]["log.lammps"] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    (path.parent / MANIFEST).write_text(json.dumps(manifest))


RUN_DAMAGE = {
    "log cut to 60 %": lambda log: log.write_text(log.read_text()[: int(0.6 * len(log.read_text()))]),
    "log emptied": lambda log: log.write_text(""),
    "densities raised 10 %": raise_densities,
    "log cut, manifest rewritten to match": cut_consistently,
    "manifest gone (an entry of the old format)": lambda log: (log.parent / MANIFEST).unlink(),
    "manifest replaced by []": lambda log: (log.parent / MANIFEST).write_text("[]"),
}


@pytest.mark.parametrize("damage", list(RUN_DAMAGE), ids=list(RUN_DAMAGE))
def test_a_damaged_run_cache_entry_is_run_again_not_replayed(tmp_path, caplog, damage):
    cache = OutputCache(tmp_path / "cache", salt="test")
    first, status = evaluate(tmp_path, cache)
    assert status == "miss"
    log = the_log(tmp_path / "cache")
    before = log.read_text()
    RUN_DAMAGE[damage](log)
    assert not log.is_file() or log.read_text() != before or damage.startswith("manifest")
    with caplog.at_level(logging.WARNING, logger="chemfit_core.cache"):
        again, status = evaluate(tmp_path, cache)
    assert status == "miss" and again == first  # run again: the true values, not the damaged ones
    assert cache.rejected == 1 and re.search(r"run cache: entry \S+ is not used", caplog.text)
    check_log(the_log(tmp_path / "cache"))  # stored again, whole
    _, status = evaluate(tmp_path, cache)
    assert status == "hit"
