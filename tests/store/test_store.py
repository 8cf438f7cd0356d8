"""The store without a model: reads that are right or fail loudly, streaming reads, verify,
compaction (and kill -9 during it), the lock, the incremental catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from store_helpers import lock_held_elsewhere, synthetic_store

from fstore.errors import StoreError
from fstore.store import catalog, iter_features, load_features, sidecar
from fstore.store.compact import compact
from fstore.store.layout import shard_path
from fstore.store.lock import StoreLock
from fstore.store.verify import verify


def expected(store: Path, layer: str = "f") -> dict[str, np.ndarray]:
    """Every live row, read straight from the shard files' own datasets."""
    out = {}
    for name in sorted(os.listdir(sidecar(store) / "shards")):
        with h5py.File(shard_path(store, name), "r") as f:
            for key, row in zip(f["keys"].asstr()[()], f["features"][layer][()]):
                out[key] = row
    return out


def snapshot(store: Path) -> tuple[list, np.ndarray, np.ndarray]:
    fs = load_features(store, "f")
    return list(fs.keys), fs.X, fs.y


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return synthetic_store(tmp_path / "s.h5", shards=40, rows=5)


def test_reads_under_a_low_open_file_limit_are_right(store, tmp_path):
    """40 shard files, RLIMIT_NOFILE 20: load_features is right; the virtual dataset is NaN."""
    script = f"""
import resource, sys, numpy as np, h5py
from fstore.store import load_features
resource.setrlimit(resource.RLIMIT_NOFILE, (20, 20))
fs = load_features(__import__("pathlib").Path({str(store)!r}), "f")
np.save({str(tmp_path / "x.npy")!r}, fs.X)
with h5py.File({str(store)!r}, "r") as f:
    print(int(np.isnan(f["features/f"][()]).any(axis=1).sum()))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=store.parent, check=True,
                         capture_output=True, text=True)  # fmt: skip
    X = np.load(tmp_path / "x.npy")
    want = expected(store)
    keys = list(load_features(store, "f").keys)
    assert X.shape == (200, 6) and not np.isnan(X).any()
    np.testing.assert_array_equal(X, np.stack([want[k] for k in keys]))
    assert int(out.stdout) > 0  # the hazard the direct read avoids: VDS rows read as NaN


def test_a_limit_too_low_for_one_file_is_one_clear_line(store):
    script = f"""
import resource
from pathlib import Path
from fstore.errors import StoreError
from fstore.store import load_features, store_layers
store_layers(Path({str(store)!r}))
import h5py, numpy  # imported before the limit falls
import os
limit = len(os.listdir("/proc/self/fd")) + 1  # the catalog opens, a shard not
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
try:
    load_features(Path({str(store)!r}), "f")
except StoreError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "too many open files (RLIMIT_NOFILE is" in out.stdout, out
    assert out.stdout.count("\n") == 1


def test_row_selection_and_batches_equal_the_whole(store):
    whole = load_features(store, "g")
    part = load_features(store, "g", rows=slice(17, 123))
    np.testing.assert_array_equal(part.X, whole.X[17:123])
    assert list(part.keys) == list(whole.keys[17:123])
    picked = np.array([150, 3, 3, 77, -1])
    got = load_features(store, "g", rows=picked)
    np.testing.assert_array_equal(got.X, whole.X[picked])
    np.testing.assert_array_equal(got.y, whole.y[picked])
    batches = list(iter_features(store, "g", batch_rows=64))
    assert [len(b.keys) for b in batches] == [64, 64, 64, 8]
    np.testing.assert_array_equal(np.concatenate([b.X for b in batches]), whole.X)
    assert whole.shape == (2, 2)
    # the public API takes the store as a string too
    np.testing.assert_array_equal(load_features(str(store), "g").X, whole.X)
    assert sum(len(b.keys) for b in iter_features(str(store), "g", batch_rows=100)) == 200


def test_later_generations_replace_rows_keeping_the_folder_order(tmp_path):
    store = synthetic_store(tmp_path / "s.h5", shards=4, rows=5)
    before = load_features(store, "f")
    synthetic_store(store, shards=1, rows=3, generation=2, seed=99)  # img0..img2 recomputed
    after = load_features(store, "f")
    assert list(after.keys) == list(before.keys)
    fresh = load_features(synthetic_store(tmp_path / "new.h5", shards=1, rows=3, seed=99), "f")
    redone = np.isin(after.keys, fresh.keys)
    assert redone.sum() == 3 and not np.array_equal(after.X[redone], before.X[redone])
    np.testing.assert_array_equal(after.X[~redone], before.X[~redone])
    np.testing.assert_array_equal(after.X[redone], fresh.X)


def test_verify_finds_missing_truncated_changed_and_nan_shards(store):
    assert verify(store).ok
    shards = sorted(os.listdir(sidecar(store) / "shards"))
    shard_path(store, shards[0]).unlink()
    path = shard_path(store, shards[1])
    path.write_bytes(path.read_bytes()[:-100])
    path = shard_path(store, shards[2])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify(store)
    found = {p.file: p.what for p in report.problems}
    assert set(found) == set(shards[:3])
    assert found[shards[0]] == "missing" and "bytes" in found[shards[1]]
    assert "sha256" in found[shards[2]]
    assert "fstore verify --repair" in report.summary() and "\n" not in report.summary()
    with pytest.raises(StoreError, match="missing"):
        load_features(store, "f")
    repaired = verify(store, repair=True)
    assert repaired.moved == shards[1:3]
    assert sorted(os.listdir(sidecar(store) / "damaged")) == shards[1:3]


def test_verify_finds_non_finite_values(tmp_path):
    store = synthetic_store(tmp_path / "s.h5", shards=2, rows=4)
    name = sorted(os.listdir(sidecar(store) / "shards"))[1]
    path = shard_path(store, name)
    size = path.stat().st_size
    with h5py.File(path, "r+") as f:
        f["features/g"][2, 1] = np.inf
    assert path.stat().st_size == size  # in place: only the hash and the value scan can tell
    report = verify(store)
    assert [p.file for p in report.problems] == [name]
    assert "sha256" in report.problems[0].what


def test_compaction_keeps_rows_and_order_and_cuts_files(store):
    before = snapshot(store)
    report = compact(store, segment_rows=64, max_small=1)
    # 40 files of 5 rows: three segments of 13 files (65 rows >= 64), one shard left alone
    assert (report.files_before, report.files_after, report.segments_written) == (40, 4, 3)
    after = snapshot(store)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[2], before[2])
    assert verify(store).ok
    assert sorted(os.listdir(sidecar(store) / "shards")) == [
        "g000001-s000039.h5", "mg000001-s000000-13.h5", "mg000001-s000013-13.h5",
        "mg000001-s000026-13.h5"]  # fmt: skip


@pytest.mark.parametrize("point", ["segment", "catalog"])
def test_kill_9_during_compaction_leaves_a_store_that_resumes(store, point):
    before = snapshot(store)
    script = f"""
import contextlib, os, signal
from pathlib import Path
from fstore.store import compact as c

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if {point!r} == "segment":  # the segment is written, the catalog does not list it yet
    write = c.write_shard
    c.write_shard = lambda *args: (write(*args), die())
else:  # the catalog lists the segment, the old files are still there
    transaction = c.transaction
    @contextlib.contextmanager
    def then_die(*args):
        with transaction(*args) as con:
            yield con
        die()
    c.transaction = then_die
c.compact(Path({str(store)!r}), segment_rows=64, max_small=1)
"""
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    mid = snapshot(store)  # opens and reads right at once, with leftovers on disk
    assert mid[0] == before[0]
    np.testing.assert_array_equal(mid[1], before[1])
    compact(store, segment_rows=64, max_small=1)
    after = snapshot(store)
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])
    assert not list(sidecar(store).rglob("*.tmp"))
    assert len(os.listdir(sidecar(store) / "shards")) == 4
    assert verify(store).ok


def test_a_second_process_is_refused_with_the_holders_pid(store):
    with lock_held_elsewhere(store) as pid:
        with pytest.raises(StoreError, match=rf"pid {pid}\b.*kill {pid}"):
            compact(store)
        with pytest.raises(StoreError, match=f"pid {pid}"), StoreLock(store):
            pass
    with StoreLock(store):  # free again once the holder is gone
        pass


def test_a_truncated_shard_is_one_line_naming_it(store):
    name = sorted(os.listdir(sidecar(store) / "shards"))[5]
    path = shard_path(store, name)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError, match=f"shard {name}") as info:
        load_features(store, "f")
    assert "\n" not in str(info.value)


def test_each_commit_is_one_catalog_transaction(store):
    """The catalog counts its commits: 40 shards and one plan, nothing else."""
    with catalog.connect(store) as con:
        assert catalog.version(con) == 41
        assert catalog.counts(con) == {"planned": 200, "stored": 200, "pending": 0, "bad": 0}


def test_load_features_enters_at_most_10_functions_of_fstore(store):
    """Counted with the profiler: every fstore function a read calls, once each (comprehensions
    and generator expressions are expressions, not functions: Python 3.12 inlines most).

    Eight read the rows; two more (``view_problem`` and the catalog's ``identity``) say when
    the view ``fstore.h5`` does not serve the catalog, which every read of a store notices."""
    import fstore

    root = str(Path(fstore.__file__).parent)
    entered: set[tuple[str, str]] = set()

    def profile(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(root) and "<" not in code.co_name:
            entered.add((Path(code.co_filename).name, code.co_qualname))

    sys.setprofile(profile)
    try:
        load_features(store, "f")
    finally:
        sys.setprofile(None)
    assert ("reads.py", "load_features") in entered
    assert ("reads.py", "view_problem") in entered
    assert len(entered) <= 10, sorted(entered)


def view_rows(store: Path) -> tuple[list, np.ndarray]:
    """What plain h5py reads through the view."""
    with h5py.File(store, "r") as f:
        return list(f["keys"].asstr()[()]), f["features/f"][()]


@pytest.mark.parametrize("point", ["catalog", "view"])
def test_the_view_never_reads_nan_after_kill_9_during_compaction(store, point):
    before = snapshot(store)
    script = f"""
import contextlib, os, signal
from pathlib import Path
from fstore.store import compact as c

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if {point!r} == "catalog":  # the catalog lists the first segment, the view is the old one
    transaction = c.transaction
    @contextlib.contextmanager
    def then_die(*args):
        with transaction(*args) as con:
            yield con
        die()
    c.transaction = then_die
else:  # every segment is listed, the view is about to be written (its second refresh)
    real, calls = c.refresh_view, []
    c.refresh_view = lambda *a, **k: die() if calls.append(1) or len(calls) > 1 else real(*a, **k)
c.compact(Path({str(store)!r}), segment_rows=64, max_small=1)
"""
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    keys, X = view_rows(store)  # the old view: every source it names is still there
    assert keys == before[0] and not np.isnan(X).any()
    np.testing.assert_array_equal(X, before[1])
    report = verify(store)
    assert not report.ok and report.problems[0].kind == "view", report.problems
    assert verify(store, repair=True).ok
    keys, X = view_rows(store)
    assert keys == before[0]
    np.testing.assert_array_equal(X, before[1])


@pytest.mark.parametrize("fault", ["missing", "moved", "unmarked"])
def test_every_read_notices_a_stale_view(store, tmp_path, caplog, fault):
    """load_features and iter_features serve the catalog's rows, and say (a warning naming the
    repair) that plain h5py would not: the view is gone, or names another store's folder."""
    want = load_features(store, "f")
    if fault == "missing":
        store.unlink()
    elif fault == "unmarked":  # a view from before views recorded their folder
        import h5py

        with h5py.File(store, "a") as f:
            del f.attrs["sidecar"]
    else:
        moved = store.with_name("t.h5")
        store.rename(moved)
        sidecar(store).rename(sidecar(moved))
        store = moved
    caplog.clear()
    for read in (lambda: load_features(store, "f"), lambda: next(iter_features(store, "f"))):
        caplog.clear()
        got = read()
        np.testing.assert_array_equal(got.X, want.X[: len(got.X)])
        lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(lines) == 1 and lines[0].startswith(f"the view {store} "), lines
        assert "fstore verify --repair" in lines[0] and "None/" not in lines[0]


def test_a_read_of_a_fresh_view_says_nothing(store, caplog):
    load_features(store, "f")
    next(iter_features(store, "f"))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_an_unfinished_stores_older_view_is_not_called_stale(store, caplog):
    """A build stopped after planning more images leaves the view of the shards it finished:
    reads and verify agree that the build that finishes the store rewrites it (no warning
    asking for a repair that would not change it); only the writer asks for the exact check."""
    from contextlib import closing

    from fstore.store.reads import view_problem

    with closing(catalog.connect(store, write=True)) as con:
        with catalog.transaction(con, store):
            catalog.add_plan(
                con, ["g999999-s000000"], [("a/new.jpg", "a", "", "g999999-s000000", 1, 1)]
            )
        assert catalog.unfinished(con)
        assert view_problem(store, con) == ""
        assert "older than the catalog" in view_problem(store, con, exact=True)
    caplog.clear()
    load_features(store, "f")
    next(iter_features(store, "f"))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    report = verify(store)
    assert report.pending == 1 and not report.problems
