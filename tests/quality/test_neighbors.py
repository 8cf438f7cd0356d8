"""Exact search against brute-force NumPy, the faiss index against exact search, and the
index's staleness rules, on clustered synthetic features."""

from __future__ import annotations

import numpy as np
import pytest
from quality_synthetic import clustered, feature_store

from fstore.errors import StoreError
from fstore.quality import neighbors as nb
from fstore.quality.index import IndexOptions, build_index, open_index
from fstore.quality.neighbors import exact_search, neighbors

pytest.importorskip("faiss")


def brute_force(X: np.ndarray, Q: np.ndarray, k: int):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    sims = Qn @ Xn.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


def test_exact_search_equals_brute_force_across_batches(tmp_path, monkeypatch):
    X = clustered(1500, 32, 12, seed=1)
    store = feature_store(tmp_path / "s.h5", X)
    Q = clustered(70, 32, 12, seed=2)
    monkeypatch.setattr(nb, "QUERY_BLOCK", 16)  # several query blocks and row batches
    sims, rows = exact_search(store, "pooled", Q, 10, batch_rows=256)
    want_s, want_i = brute_force(X, Q, 10)
    np.testing.assert_allclose(sims, want_s, atol=1e-5)
    # same rows in the same order, except where two similarities tie within rounding
    ties = np.abs(np.diff(want_s, axis=1)) < 1e-5
    differ = rows != want_i
    assert not (differ & ~np.pad(ties, ((0, 0), (0, 1))) & ~np.pad(ties, ((0, 0), (1, 0)))).any()


def test_neighbors_of_a_key_leave_it_out_and_give_keys(tmp_path):
    X = clustered(300, 16, 5, seed=3)
    store = feature_store(tmp_path / "s.h5", X, labels=["a", "b", "c"] * 100)
    key = "train/b/img_000004.jpg"
    result = neighbors(store, [key], k=5)
    _, want = brute_force(X, X[4:5], 6)
    got = [n.key for n in result.results[0].neighbors]
    assert key not in got and len(got) == 5
    assert got == [f"train/{'abc'[i % 3]}/img_{i:06d}.jpg" for i in want[0][1:]]
    assert (
        result.results[0].is_key and result.results[0].neighbors[0].label == "abc"[want[0][1] % 3]
    )


def test_ivf_index_recall_at_10_against_exact(tmp_path):
    X = clustered(20_000, 64, 100, seed=4)
    store = feature_store(tmp_path / "s.h5", X)
    options = IndexOptions(kind="ivf-sq8", nlist=128, nprobe=16, train_rows=8000)
    report = build_index(store, "pooled", options)
    assert (report.kind, report.action, report.rows) == ("ivf-sq8", "built", 20_000)
    Q = X[::100] + 0.05 * np.random.default_rng(5).normal(size=(200, 64)).astype(np.float32)
    _, approx = open_index(store, "pooled").search(Q, 10)
    _, exact = brute_force(X, Q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95


def test_index_with_rerank_gives_exact_similarities(tmp_path):
    X = clustered(3000, 32, 20, seed=6)
    store = feature_store(tmp_path / "s.h5", X)
    build_index(store, "pooled", IndexOptions(kind="ivf-sq8", nlist=32, nprobe=4, rerank=50))
    sims, rows = open_index(store, "pooled").search(X[:20], 5)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    exact = np.einsum("md,mkd->mk", Xn[:20], Xn[rows])  # the found rows' true cosine
    np.testing.assert_allclose(sims, exact, atol=1e-5)
    assert (rows[:, 0] == np.arange(20)).all()


def test_row_reader_reads_rows_in_any_order_with_repeats(tmp_path):
    from fstore.quality.rows import RowReader, store_rows

    X = clustered(300, 8, 3, seed=2)
    store = feature_store(tmp_path / "s.h5", X)
    wanted = np.array([299, 0, 17, 17, 150, 3])
    with RowReader(store_rows(store), "pooled") as reader:
        np.testing.assert_array_equal(reader.read(wanted), X[wanted])
        assert reader.read(np.array([], np.int64)).shape[0] == 0


def test_rerank_in_blocks_equals_rerank_at_once(tmp_path, monkeypatch):
    """The re-ranking gathers candidates a block of queries at a time; blocks of 3 queries
    give the same result as one block."""
    from fstore.quality import index as index_module

    X = clustered(3000, 32, 20, seed=6)
    store = feature_store(tmp_path / "s.h5", X)
    build_index(store, "pooled", IndexOptions(kind="ivf-sq8", nlist=32, nprobe=4, rerank=50))
    loaded = open_index(store, "pooled")
    whole = loaded.search(X[:40], 5)
    monkeypatch.setattr(index_module, "RERANK_BLOCK", 3 * 50 * 32)
    blocks = loaded.search(X[:40], 5)
    np.testing.assert_array_equal(blocks[1], whole[1])
    np.testing.assert_allclose(blocks[0], whole[0], atol=1e-6)
    unranked = loaded.search(X[:40], 5, rerank=0)  # the index's own similarities
    assert np.abs(unranked[0] - whole[0]).max() < 0.05


def test_duplicate_candidates_through_the_index_match_exact_ones(tmp_path):
    from fstore.quality.duplicates import DuplicateOptions, candidate_pairs
    from fstore.quality.rows import store_rows

    rng = np.random.default_rng(9)
    X = clustered(4000, 32, 40, seed=9)
    X[1::2] = X[::2] + 0.01 * rng.normal(size=X[::2].shape).astype(np.float32)  # near copies
    store = feature_store(tmp_path / "s.h5", X)
    build_index(store, "pooled", IndexOptions(kind="ivf-sq8", nlist=64, nprobe=16))
    rows = store_rows(store)
    options = DuplicateOptions(k=1, min_similarity=0.99)
    exact, exact_sims = candidate_pairs(store, "pooled", rows, options)
    approx, _ = candidate_pairs(store, "pooled", rows, DuplicateOptions(1, 0.99, use_index=True))
    assert len(exact) == 2000 and (exact[:, 1] - exact[:, 0] == 1).all()
    assert len({tuple(p) for p in approx} & {tuple(p) for p in exact}) >= 0.95 * 2000
    assert (exact_sims >= 0.99).all()


def test_index_of_another_store_content_is_refused_then_rebuilt(tmp_path):
    """A store written again under the same name (new catalog) makes the index stale."""
    store = feature_store(tmp_path / "s.h5", clustered(200, 16, 4, seed=7))
    build_index(store, "pooled")
    assert build_index(store, "pooled").action == "current"
    import shutil

    shutil.rmtree(tmp_path / "s.h5.d")
    store.unlink()
    feature_store(store, clustered(250, 16, 4, seed=8))
    with pytest.raises(StoreError, match="older than store"):
        neighbors(store, ["train//img_000001.jpg"], use_index=True)
    assert build_index(store, "pooled").action == "built"
    assert len(neighbors(store, ["train//img_000001.jpg"], k=3, use_index=True).results) == 1


def test_unknown_layer_and_unknown_query_are_user_errors(tmp_path):
    store = feature_store(tmp_path / "s.h5", clustered(50, 8, 2))
    with pytest.raises(StoreError, match="no layer 'fc7'"):
        neighbors(store, ["train//img_000001.jpg"], layer="fc7")
    with pytest.raises(Exception, match="neither a key"):
        neighbors(store, ["nothing/here.jpg"])


def _coverage_by_loop(keys, shas, rows, files):
    """The index's rows matched to the store's one key at a time: the reference."""
    position, ids, where, stale = rows.position(), [], [], 0
    for i, (key, sha) in enumerate(zip(keys, shas)):
        at = position.get(key)
        if at is None or rows.sha256[at] != sha or (not sha and files != rows.files_digest):
            stale += 1
        else:
            ids.append(i)
            where.append(at)
    added = sorted(set(range(len(rows))) - set(where))
    return ids, where, added, stale


@pytest.mark.parametrize("seed", range(6))
def test_index_coverage_matches_a_key_by_key_loop(tmp_path, seed):
    """Rows moved (a compaction), left, changed or added since the index was built: the array
    matching gives the ids, store rows, new rows and stale count that a loop over keys gives."""
    from dataclasses import replace

    from fstore.quality.index import _coverage
    from fstore.quality.rows import store_rows

    rng = np.random.default_rng(seed)
    rows = store_rows(feature_store(tmp_path / "s.h5", clustered(60, 4, 2, seed=seed)))
    keys, shas = [str(k) for k in rows.keys], [f"{i:064x}" for i in range(60)]
    rows = replace(rows, sha256=np.array(shas, dtype=object))
    kept = rng.permutation(60)[: rng.integers(0, 61)]  # the index's rows, in another order
    index_keys = [keys[i] for i in kept] + ["train/gone/img.jpg"] * (seed % 2)
    index_shas = [shas[i] for i in kept] + ["f" * 64] * (seed % 2)
    for i in rng.choice(len(kept), min(3, len(kept)), replace=False):  # changed images
        index_shas[i] = "0" * 64
    if seed == 5:  # a store written from arrays: no sha256, its shard files decide
        rows = replace(rows, sha256=np.array([""] * 60, dtype=object))
        index_shas = [""] * len(index_keys)
    for files in (rows.files_digest, "another digest"):
        got = _coverage(index_keys, index_shas, rows, files)
        ids, where, added, stale = _coverage_by_loop(index_keys, index_shas, rows, files)
        assert got.ids.tolist() == ids and got.positions.tolist() == where
        assert got.added.tolist() == added and got.stale == stale
    unchanged = _coverage(keys, list(rows.sha256), rows, rows.files_digest)
    assert unchanged.stale == 0 and len(unchanged.added) == 0
    assert unchanged.positions.tolist() == list(range(60))


def test_fewer_cells_searched_find_fewer_of_the_exact_neighbours(tmp_path):
    """``nprobe`` reaches faiss: all 64 cells find what exact search finds (but for the 8-bit
    codes' ties), one cell visibly less."""
    X = clustered(4000, 32, 40, seed=9)
    store = feature_store(tmp_path / "s.h5", X)
    build_index(store, "pooled", IndexOptions(kind="ivf-sq8", nlist=64, nprobe=16))
    index = open_index(store, "pooled")
    _, exact = exact_search(store, "pooled", X[:500], 6)

    def recall(nprobe):
        hits = index.search(X[:500], 6, rerank=0, nprobe=nprobe)[1]
        return np.mean([len(set(a) & set(e)) / 6 for a, e in zip(hits, exact)])

    assert recall(64) >= 0.95
    assert recall(1) < recall(64) - 0.05


@pytest.mark.parametrize(
    "damage",
    ["meta not json", "meta of an earlier fstore", "rows file cut", "rows file gone",
     "faiss file garbage", "faiss file of other rows"],
)  # fmt: skip
def test_a_damaged_index_is_refused_in_one_line_then_built_again(tmp_path, damage):
    """Each file of the index damaged, or the index written by an fstore that recorded less:
    a search is refused with a StoreError that names the repair, and ``build_index`` builds
    it again instead of failing."""
    import json

    from fstore.quality.index import _files

    store = feature_store(tmp_path / "s.h5", clustered(200, 16, 4, seed=3))
    build_index(store, "pooled")
    faiss_file, rows_file, meta_file = _files(store, "pooled")
    if damage == "meta not json":
        meta_file.write_text(meta_file.read_text()[:20])
    elif damage == "meta of an earlier fstore":
        meta = json.loads(meta_file.read_text())
        del meta["files_digest"]
        meta_file.write_text(json.dumps(meta))
    elif damage == "rows file cut":
        rows_file.write_text(rows_file.read_text()[:-100])
    elif damage == "rows file gone":
        rows_file.unlink()
    elif damage == "faiss file garbage":
        faiss_file.write_bytes(b"\x00" * 64)
    else:
        other = feature_store(tmp_path / "o.h5", clustered(150, 16, 4, seed=4))
        build_index(other, "pooled")
        faiss_file.write_bytes(_files(other, "pooled")[0].read_bytes())
    with pytest.raises(StoreError, match="fstore index --store") as caught:
        open_index(store, "pooled")
    assert "\n" not in str(caught.value)
    assert build_index(store, "pooled").action == "built"
    assert open_index(store, "pooled").search(clustered(3, 16, 1), 2)[1].shape == (3, 2)


def test_an_index_keeps_keys_with_tabs_and_newlines(tmp_path):
    """Any name the file system allows is a key; the index's list of keys holds it whole."""
    from fstore.store import write_arrays

    X = clustered(40, 8, 2, seed=5)
    keys = [f"img_{i:03d}.jpg" for i in range(38)] + ["a\tb.jpg", "c\nd.jpg"]
    store = write_arrays(tmp_path / "s.h5", {"pooled": X}, keys, ["c"] * 40, ["train"] * 40)
    build_index(store, "pooled", IndexOptions(kind="flat"))
    assert build_index(store, "pooled", IndexOptions(kind="flat")).action == "current"
    index = open_index(store, "pooled")
    rows = index.search(X[-2:], 1)[1][:, 0]
    assert [str(index.rows.keys[r]) for r in rows] == ["train/c/a\tb.jpg", "train/c/c\nd.jpg"]


def test_a_shard_that_lost_its_layer_is_one_line_naming_the_repair(tmp_path):
    """Rows read by their place in a shard file fail as load_features does: one StoreError
    naming the shard and fstore verify, not an HDF5 KeyError."""
    import h5py

    from fstore.quality.rows import RowReader, store_rows
    from fstore.store import sidecar

    store = feature_store(tmp_path / "s.h5", clustered(20, 4, 2))
    rows = store_rows(store)
    with h5py.File(next((sidecar(store) / "shards").glob("*.h5")), "a") as f:
        del f["features"]["pooled"]
    with RowReader(rows, "pooled") as reader, pytest.raises(StoreError) as caught:
        reader.read(np.arange(3))
    assert "does not read" in str(caught.value) and "fstore verify" in str(caught.value)
