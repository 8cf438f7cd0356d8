"""The index's journal: a commit writes only what changed; folds are geometric; readers see
base and journal as one index; a killed fold or entry leaves nothing a reader would misread."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest
from store_helpers import assert_same_store, manifest, shard_rows, write_generation

from fstore.build.write import Writer
from fstore.store import store as st
from fstore.store.compact import compact
from fstore.store.lock import StoreLock
from fstore.store.verify import verify

ROWS = 10


def keys_of(first: int, shards: int) -> list[list[str]]:
    return [[f"c{i % 3}/img{i:06d}" for i in range(first + s * ROWS, first + (s + 1) * ROWS)]
            for s in range(shards)]  # fmt: skip


def entries(store: Path) -> list[Path]:
    return sorted(st.journal_dir(store).glob("j-*.h5"))


@pytest.fixture
def journaled(monkeypatch):
    """Every commit after the first appends to the journal (no fold by size or share)."""
    monkeypatch.setattr(st, "SMALL_INDEX_ROWS", 0)
    monkeypatch.setattr(st, "FOLD_FRACTION", 1e9)


def assert_same_index(a: Path, b: Path) -> None:
    assert_same_store(a, b, ("f", "g"))
    assert st.store_info(a).shards == st.store_info(b).shards


def test_an_extension_writes_only_its_rows_and_reads_as_one_index(tmp_path, monkeypatch):
    store, reference = tmp_path / "s.h5", tmp_path / "ref.h5"
    write_generation(store, 1, keys_of(0, 6))
    base_inode = store.stat().st_ino
    assert not entries(store)
    with monkeypatch.context() as m:
        m.setattr(st, "SMALL_INDEX_ROWS", 0)  # the default share (1/4 of 60 rows) applies
        replaced = [keys_of(0, 1)[0][:4] + keys_of(60, 1)[0][:6]]  # 4 old keys, 6 new
        write_generation(store, 2, replaced, seed=50)
    assert store.stat().st_ino == base_inode  # the base was not rewritten
    (entry,) = entries(store)
    with h5py.File(entry, "r") as f:
        assert len(f["catalog/rows/keys"]) == ROWS  # only the new shard's rows
        assert list(f["catalog/file_name"].asstr()) == [st.shard_name(2, 0)]
    with h5py.File(store, "r") as f:  # plain h5py sees the base until a fold
        assert len(f["keys"]) == 60
    write_generation(reference, 1, keys_of(0, 6))
    write_generation(reference, 2, replaced, seed=50)
    assert not entries(reference)  # small stores fold at the end of a build
    assert_same_index(store, reference)
    fs = st.load_features(store, "f")
    assert len(fs.keys) == 66 and list(fs.keys[-10:]) == replaced[0]  # replaced rows move last
    assert st.store_info(store).journal == 1 and verify(store).ok
    state = st.load_state(store)
    assert state.index_current and len(state.files) == 7

    compact(store, segment_rows=10**6, max_small=10**6)  # folds, merges nothing
    assert not entries(store) and st.store_info(store).journal == 0
    with h5py.File(store, "r") as f:
        assert list(f["keys"].asstr()) == list(fs.keys)
    assert_same_index(store, reference)


def test_folds_are_geometric_so_all_index_writes_stay_linear(tmp_path, monkeypatch):
    """40 extensions of one shard: rewriting the index each time would write 8,200 rows."""
    monkeypatch.setattr(st, "SMALL_INDEX_ROWS", 0)
    written = {"fold": [], "entry": []}
    real_write_index, real_write_entry = st.write_index, st._write_entry

    def write_index(store, manifest, parts, files):
        written["fold"].append(sum(st._rows(p) for p in parts))
        return real_write_index(store, manifest, parts, files)

    def write_entry(store, name, manifest, parts, added, removed):
        written["entry"].append(sum(st._rows(p) for p in parts))
        return real_write_entry(store, name, manifest, parts, added, removed)

    monkeypatch.setattr(st, "write_index", write_index)
    monkeypatch.setattr(st, "_write_entry", write_entry)
    store = tmp_path / "s.h5"
    for generation in range(1, 41):
        write_generation(store, generation, keys_of((generation - 1) * ROWS, 1))
    total = 40 * ROWS
    assert st.store_info_rows(store) == total
    assert sum(written["entry"]) + sum(written["fold"]) <= 6 * total, written
    assert len(written["fold"]) <= 16 and len(written["entry"]) >= 20, written
    folds = written["fold"]
    assert all(b >= 1.25 * a for a, b in zip(folds[4:], folds[5:])), folds  # geometric


def test_a_build_defers_a_fold_until_50_times_the_last_folds_cost_has_passed(tmp_path):
    """A fold is due (30 new rows over a base of 10) but the last one was slow: the writer
    commits nothing mid-build; the end of the build folds."""
    store = write_generation(tmp_path / "s.h5", 1, keys_of(0, 1))
    base = store.stat().st_ino
    keys = keys_of(10, 3)
    st.write_plan(store, 2, keys)
    with StoreLock(store):
        writer = Writer(store, manifest(), None, index_every=0.0)
        writer._fold_cost = 1e6  # as if the last fold had taken very long
        for index, shard_keys in enumerate(keys):
            writer.put(st.shard_name(2, index), shard_rows(shard_keys, index))
        writer.close(index=False)
        assert store.stat().st_ino == base and not entries(store)
        assert st.store_info_rows(store) == 10  # the index still lists only the base's rows
        assert st.commit_index(store, manifest(), writer.state.ordered(), writer.state.files,
                               final=True) == "fold"  # fmt: skip
    assert st.store_info_rows(store) == 40 and store.stat().st_ino != base


def test_a_fold_killed_before_removing_entries_leaves_them_ignored(tmp_path, journaled):
    store, reference = tmp_path / "s.h5", tmp_path / "ref.h5"
    for s in (store, reference):
        write_generation(s, 1, keys_of(0, 3))
        write_generation(s, 2, keys_of(30, 2))
    pending = len(entries(store))
    assert pending >= 1
    aside = tmp_path / "aside"
    shutil.copytree(st.journal_dir(store), aside)
    compact(store)  # folds; then the old entries come back, as if the kill came before removal
    for path in aside.iterdir():
        shutil.copy2(path, st.journal_dir(store) / path.name)
    (st.journal_dir(store) / ".j-torn.h5.123.tmp").write_bytes(b"half an entry")
    assert st.read_catalog(store).journal == []  # another base's entries are not applied
    assert_same_index(store, reference)
    removed, state = st.clean_store(store)
    assert removed == pending + 1 and not list(st.journal_dir(store).iterdir())
    assert state.index_current


def test_a_pending_journal_is_the_resume_state_without_opening_a_shard(
    tmp_path, journaled, monkeypatch
):
    store = tmp_path / "s.h5"
    write_generation(store, 1, keys_of(0, 3))
    write_generation(store, 2, keys_of(30, 3))
    assert entries(store)

    def no_open(path):
        raise AssertionError(f"opened {path}")

    monkeypatch.setattr(st, "read_file_parts", no_open)
    st.forget_cached_index()
    state = st.load_state(store)
    assert state.index_current and len(state.parts) == 6 and not state.damaged


def test_a_shard_missing_from_a_journaled_store_is_named(tmp_path, journaled):
    store = tmp_path / "s.h5"
    write_generation(store, 1, keys_of(0, 2))
    write_generation(store, 2, keys_of(20, 2))
    st.shard_path(store, st.shard_name(2, 1)).unlink()
    found = verify(store)
    assert [p.file for p in found.problems] == [st.shard_name(2, 1)]
    with pytest.raises(st.StoreError, match="shard g000002-s000001.h5 is missing"):
        st.load_features(store, "f")
    assert st.load_state(store).missing == [st.shard_name(2, 1)]


def _part(name: str, keys: list[str], errors: list[tuple[str, bool]], offset: int = 0) -> st.Part:
    rows = [f"sha-{k}" for k in keys]
    errs = [{"key": k, "reason": "bad", "sha256": f"sha-{k}" if stored else "x", "size": 1,
             "mtime_ns": 2, "stored": stored} for k, stored in errors]  # fmt: skip
    return st.Part(keys, rows, [1] * len(keys), [2] * len(keys), errors=errs, name=name,
                   file=f"{name}.h5", offset=offset)  # fmt: skip


def test_live_rows_without_repeated_keys_equal_the_resolved_rows():
    parts = [
        _part("g1-s0", ["a/1", "a/2", "b/1"], [("b/9", False), ("a/2", True)]),
        _part("g1-s1", ["b/2", "c/1"], [("c/7", False), ("q/1", True)], offset=3),
        _part("g2-s0", ["d/1"], []),
    ]
    fast = st._concatenated(parts)
    assert fast == st._resolved(parts) and st.live_rows(parts) == fast
    assert [e["key"] for e in fast.errors] == ["b/9", "c/7", "a/2"]  # q/1 has no row: dropped
    assert fast.sources[3:5] == [("g1-s1.h5", 3), ("g1-s1.h5", 4)]
    again = parts + [_part("g3-s0", ["a/1"], [("d/1", False)])]  # a/1 re-read, d/1 now broken
    live = st.live_rows(again)
    assert live == st._resolved(again) and live != st._concatenated(again)
    assert live.keys == ["a/2", "b/1", "b/2", "c/1", "a/1"] and live.sources[-1] == ("g3-s0.h5", 0)


@pytest.mark.parametrize("when", ["listing the journal", "reading the catalog"])
def test_a_read_overlapping_a_fold_sees_every_committed_row(tmp_path, journaled, monkeypatch, when):
    """Another process folds (new base, entries deleted) while a reader is between opening the
    base and reading the journal: the reader starts again rather than read the old base alone."""
    store = write_generation(tmp_path / "s.h5", 1, keys_of(0, 2))
    write_generation(store, 2, keys_of(20, 1))
    assert entries(store)
    name = "_journal_names" if when == "listing the journal" else "read_catalog"
    real, folded = getattr(st, name), []

    def fold_first(path):
        if not folded:
            folded.append(True)
            compact(store)  # as another process would, between the reader's steps
        return real(path)

    monkeypatch.setattr(st, name, fold_first)
    st.forget_cached_index()
    fs = st.load_features(store, "f")
    assert folded and not entries(store)
    assert list(fs.keys) == [k for shard in keys_of(0, 3) for k in shard]


def test_copies_of_a_store_with_the_same_entries_do_not_share_a_cached_index(tmp_path, journaled):
    a = write_generation(tmp_path / "a.h5", 1, keys_of(0, 2))
    b = tmp_path / "b.h5"
    shutil.copy2(a, b)
    shutil.copytree(st.sidecar(a), st.sidecar(b))
    write_generation(a, 2, [["x1/new"]])
    write_generation(b, 2, [["y1/new"]])
    assert [p.name for p in entries(a)] == [p.name for p in entries(b)]  # same base id, seq
    assert st.load_features(a, "f").keys[-1] == "x1/new"
    fs = st.load_features(b, "f")
    assert fs.keys[-1] == "y1/new" and "y1" in fs.classes and "x1" not in fs.classes


def test_an_index_written_before_file_mtimes_were_recorded_still_reads(tmp_path):
    store = write_generation(tmp_path / "s.h5", 1, keys_of(0, 2))
    want = st.load_features(store, "f")
    with h5py.File(store, "r+") as f:
        del f["catalog/file_mtime_ns"]
    st.forget_cached_index()
    got = st.load_features(store, "f")
    assert list(got.keys) == list(want.keys) and (got.X == want.X).all()
    assert st.load_state(store).index_current is False  # the files get looked at once
