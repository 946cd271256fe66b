"""The run cache (chemfit_core.cache.OutputCache): an external-code run whose rendered inputs,
command and engine match a stored one is read, not repeated — with the real LAMMPS binary."""

from __future__ import annotations

import copy

import pytest
from test_faults import MD_TEMPLATE as TEMPLATE  # 108 LJ argon atoms, 50 NVE steps at {{ dt }} fs

from chemfit_core import EvaluateContext, LammpsQuantityComputer
from chemfit_core.cache import OutputCache

PARAMETERS = {"dt": 5.0}


def computer(tmp_path, cache, template=TEMPLATE, seed=1):
    return LammpsQuantityComputer(
        template, tmp_path / "runs", template_variables={"seed": seed, "sigma": 3.4}, output_cache=cache
    )


def evaluate(comp, parameters):
    ctx = EvaluateContext()
    quantities = comp(parameters, ctx)
    return quantities["thermo"][-1]["PotEng"].tolist(), ctx.meta["output_cache"]


def test_a_repeated_run_is_read_from_the_cache_with_identical_results(tmp_path):
    cache = OutputCache(tmp_path / "cache", salt="test")
    comp = computer(tmp_path, cache)
    first, status = evaluate(comp, PARAMETERS)
    assert status == "miss"
    again, status = evaluate(comp, PARAMETERS)
    assert status == "hit" and again == first  # parsed from the stored log: bit for bit
    # a new computer (a restarted fit, a rerun workflow) finds it too
    again, status = evaluate(computer(tmp_path, OutputCache(tmp_path / "cache", salt="test")), PARAMETERS)
    assert status == "hit" and again == first
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize("change", ["parameter", "seed", "template", "salt"])
def test_anything_that_changes_the_run_misses(tmp_path, change):
    """Parameters and seed enter through the rendered input; template text too; the salt
    carries the engine (LAMMPS) and code versions."""
    parameters = PARAMETERS
    evaluate(computer(tmp_path, OutputCache(tmp_path / "cache", salt="v1")), parameters)
    cache = OutputCache(tmp_path / "cache", salt="v2" if change == "salt" else "v1")
    comp = computer(
        tmp_path,
        cache,
        template=TEMPLATE.replace("run 50", "run 60") if change == "template" else TEMPLATE,
        seed=2 if change == "seed" else 1,
    )
    changed = copy.copy(parameters)
    if change == "parameter":
        changed["dt"] = 5.0 + 1e-12  # a change in the last digits is a different run
    _, status = evaluate(comp, changed)
    assert status == "miss"


def test_an_incomplete_entry_is_recomputed_not_trusted(tmp_path):
    """A store killed half-way leaves only its staging folder (renamed into place when
    complete); an entry missing its output is a miss, recomputed and stored again."""
    cache = OutputCache(tmp_path / "cache", salt="test")
    first, _ = evaluate(computer(tmp_path, cache), PARAMETERS)
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    (entry / "log.lammps").unlink()
    again, status = evaluate(computer(tmp_path, cache), PARAMETERS)
    assert status == "miss" and again == first
    assert (entry / "log.lammps").is_file()  # stored again, whole
    _, status = evaluate(computer(tmp_path, cache), PARAMETERS)
    assert status == "hit"


def test_a_crashed_run_is_not_stored(tmp_path):
    cache = OutputCache(tmp_path / "cache", salt="test")
    broken = TEMPLATE.replace("fix 1 all nve", "fix 1 all nonsense")
    with pytest.raises(Exception, match="nonsense"):
        computer(tmp_path, cache, template=broken)(PARAMETERS)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
