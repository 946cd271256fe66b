"""Results and cache entries get the permissions the umask gives (as every other file the workflow
writes), still atomically; a full disk while writing is an error naming the file, which is left
as it was."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from chemfit_core.cache import MANIFEST, EvaluationCache, OutputCache
from chemfit_core.results import DiskFullError, atomic_write_bytes, write_csv, write_json


@pytest.fixture(params=[0o022, 0o002], ids=["umask 022", "umask 002"])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_results_get_the_permissions_of_the_umask(tmp_path, umask):
    import pandas as pd

    written = [
        write_json(tmp_path / "params.json", {"a": 1.0}),
        write_csv(tmp_path / "history.csv", pd.DataFrame({"a": [1.0]})),
        atomic_write_bytes(tmp_path / "figure.png", b"\x89PNG"),
    ]
    for path in written:
        assert mode(path) == 0o666 & ~umask, path
    write_json(tmp_path / "params.json", {"a": 2.0})  # replacing a file: the same
    assert mode(tmp_path / "params.json") == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "history.csv", "params.json"]


def test_cache_entries_get_the_permissions_of_the_umask(tmp_path, umask):
    evaluations = EvaluationCache(tmp_path / "cache", "ns")
    evaluations.put({"a": 1.0}, {"objective": 2.0})
    (entry,) = (tmp_path / "cache").glob("*.json")
    assert mode(entry) == 0o666 & ~umask

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "log.lammps").write_text("a log\n")
    runs = OutputCache(tmp_path / "cache" / "runs")
    runs.store("k" * 64, workdir, [Path("log.lammps")])
    stored = tmp_path / "cache" / "runs" / ("k" * 64)
    assert mode(stored) == 0o777 & ~umask
    assert mode(stored / "log.lammps") == mode(stored / MANIFEST) == 0o666 & ~umask


def test_a_full_disk_while_writing_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    """ENOSPC from the write itself (a real full disk cannot be made here without mounting one)."""
    import chemfit_core.results as results

    path = write_json(tmp_path / "params.json", {"a": 1.0})
    before = path.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results, "_write_all", full)
    with pytest.raises(DiskFullError, match=r"no space left on device while writing \S*params\.json") as info:
        write_json(path, {"a": 2.0})
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["params.json"]  # no temporary file left behind
