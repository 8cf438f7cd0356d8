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
