"""The read stage: decode workers follow the usable cores, the store does not depend on how
many there are, and a store built from a ``--model`` file resumes with a bare build."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import SMALL, make_image_folder, write_noop_model

from fstore.pipeline import read as pipeline
from fstore.pipeline.config import BuildConfig
from fstore.pipeline.model import build_store
from fstore.store import load_features, read_manifest


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    make_image_folder(root, {"alpha": 5, "beta": 4}, size=(90, 70))
    (root / "beta" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


@pytest.fixture
def noop(tmp_path):
    return write_noop_model(tmp_path / "noop.onnx")


def _config(folder, noop, store, **kw) -> BuildConfig:
    options = dict(images=folder, model=noop, preprocessing=SMALL, provider="cpu",
                   batch_size=2, shard_size=4)  # fmt: skip
    options.update(kw)
    return BuildConfig(store=store, **options)


def test_decode_workers_default_to_the_usable_cores(monkeypatch, folder, noop, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert pipeline.default_workers() == 5
    report = build_store(_config(folder, noop, tmp_path / "s.h5"))
    assert report.workers == 5
    assert build_store(_config(folder, noop, tmp_path / "t.h5", workers=2)).workers == 2


@pytest.mark.parametrize("decode", ["exact", "fast"])
def test_store_is_identical_for_1_and_3_workers(folder, noop, tmp_path, decode):
    one = build_store(_config(folder, noop, tmp_path / "one.h5", workers=1, decode=decode))
    three = build_store(_config(folder, noop, tmp_path / "three.h5", workers=3, decode=decode))
    assert one.images_computed == three.images_computed == 9 and one.errors == 1
    a = load_features(tmp_path / "one.h5", "pooled")
    b = load_features(tmp_path / "three.h5", "pooled")
    assert list(a.keys) == list(b.keys) and len(a.keys) == 9
    np.testing.assert_array_equal(a.X, b.X)


def test_decode_mode_is_recorded_and_mixing_is_refused(folder, noop, tmp_path):
    from fstore.errors import StoreError

    store = tmp_path / "s.h5"
    build_store(_config(folder, noop, store, decode="fast"))
    assert read_manifest(store).provenance["decode"] == "fast"
    again = build_store(_config(folder, noop, store))  # no --decode: the store's
    assert again.decode == "fast" and again.images_computed == 0
    with pytest.raises(StoreError, match="decode"):
        build_store(_config(folder, noop, store, decode="exact"))


def test_a_model_store_resumes_with_a_bare_build(folder, noop, tmp_path):
    store = tmp_path / "s.h5"
    build_store(_config(folder, noop, store))
    make_image_folder(folder, {"gamma": 2}, seed=3, size=(90, 70))
    report = build_store(BuildConfig(store=store, provider="cpu"))
    assert report.images_computed == 2 and report.images_done_before == 10
    features = load_features(store, "pooled")
    assert len(features.keys) == 11 and features.X.shape == (11, 3)


@pytest.mark.parametrize("decode", ["exact", "fast"])
def test_decode_processes_give_what_threads_give(folder, decode):
    """Worker processes write into shared-memory buffers: same pixels, hashes and errors."""
    from fstore.images.discover import discover

    items = discover(folder).items
    work = pipeline.Work([("s", items)], 0, len(items))
    seen = {}
    for pool in pipeline.POOLS:
        batches = pipeline.iter_batches(work, SMALL, 3, workers=2, decode=decode, pool=pool)
        rows = [(b.pixels.copy(), [(d.item.key, d.sha256, d.error) for d in b.decoded])
                for b in batches]  # fmt: skip
        seen[pool] = rows
    threads, processes = seen["threads"], seen["processes"]
    assert [r[1] for r in threads] == [r[1] for r in processes]
    assert any(error for _, decoded in threads for _, _, error in decoded)  # the broken file
    for (a, _), (b, _) in zip(threads, processes):
        np.testing.assert_array_equal(a, b)


def test_store_is_identical_for_thread_and_process_decoders(folder, noop, tmp_path):
    stores = [tmp_path / f"{pool}.h5" for pool in pipeline.POOLS]
    for pool, store in zip(pipeline.POOLS, stores):
        build_store(_config(folder, noop, store, workers=2, pool=pool))
    a, b = (load_features(s, "pooled") for s in stores)
    assert list(a.keys) == list(b.keys)
    np.testing.assert_array_equal(a.X, b.X)
