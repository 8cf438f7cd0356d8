"""Real ``kill -9`` of real build processes at several moments, then resume: nothing is lost.

The final store must equal an uninterrupted build's: same keys, same rows in the same order,
equal features. While the builds run and after every kill, the store must open and read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_folder

from fstore.errors import StoreError
from fstore.store import load_features, read_manifest, sidecar, store_info

LAYERS = ("pool5", "fc7")


def build_cmd(images: Path, store: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fstore.cli",
        "build",
        str(images),
        "--store",
        str(store),
        "--layer",
        "pool5,fc7",
        "--weights",
        "random",
        "--seed",
        "0",
        "--size",
        "32",
        "--provider",
        "cpu",
        "--batch-size",
        "2",
        "--shard-size",
        "4",
        "--threads",
        "1",
        # the store's guarantees, not int8: auto would quantize VGG16's 138 M weights first
        "--precision",
        "fp32",
        "--quiet",
    ]


def n_shards(store: Path) -> int:
    folder = sidecar(store) / "shards"
    return len(list(folder.glob("g*.h5"))) if folder.is_dir() else 0


def assert_readable(store: Path) -> int:
    """Every row the store lists reads without NaN. A build killed before its manifest was
    written has made no store yet, and a read says so in one line."""
    if read_manifest(store) is None:
        with pytest.raises(StoreError, match="^no store at "):
            load_features(store, "fc7")
        return 0
    fs = load_features(store, "fc7")
    assert not np.isnan(fs.X).any()
    return len(fs.keys)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    make_image_folder(root, {"a": 30, "b": 30, "c": 30}, size=(40, 36))
    (root / "b" / "broken.jpg").write_text("no image here")
    return root


@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_gives_identical_store(store_model, tmp_path, images):
    reference = tmp_path / "reference.h5"
    subprocess.run(build_cmd(images, reference), check=True, timeout=300)
    total = n_shards(reference)
    assert total == 23  # 91 images in shards of 4

    store = tmp_path / "killed.h5"
    seen_rows = []
    # Kill moments: during start-up, then once 1, 6, 12 and 18 shards are on disk.
    for target in (None, 1, 6, 12, 18):
        proc = subprocess.Popen(build_cmd(images, store))
        deadline = time.monotonic() + 120
        if target is None:
            time.sleep(0.5)
        else:
            while n_shards(store) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            seen_rows.append(assert_readable(store))  # a reader while the build runs
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
        assert_readable(store)
    assert n_shards(store) < total
    subprocess.run(build_cmd(images, store), check=True, timeout=300)

    assert not list(sidecar(store).rglob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    for layer in LAYERS:
        want, got = load_features(reference, layer), load_features(store, layer)
        assert list(got.keys) == list(want.keys)
        np.testing.assert_array_equal(got.X, want.X)
        np.testing.assert_array_equal(got.y, want.y)
    assert store_info(store).errors == store_info(reference).errors
    assert seen_rows == sorted(seen_rows)  # what a reader saw only grew
