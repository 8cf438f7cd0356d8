"""A store written straight through the write stage, without a model: fast store tests; and
what the fault tests share: a tmpfs to fill, a second process holding a store's lock."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from fstore.pipeline.plan import shard_name
from fstore.pipeline.write import Writer
from fstore.store import catalog, load_features, store_info
from fstore.store.compact import compact_locked
from fstore.store.layout import Manifest, read_manifest, write_manifest
from fstore.store.lock import StoreLock, prepare_store
from fstore.store.shards import ShardRows

DIM = 6
SPLIT = {"method": "none", "train_per_class": 0, "seed": 0}


def manifest() -> Manifest:
    return Manifest("", False, SPLIT, ("f", "g"), {"f": (DIM,), "g": (2, 2)}, "float32",
                    "synthetic")  # fmt: skip


def shard_rows(keys: list[str], seed: int) -> ShardRows:
    rng = np.random.default_rng(seed)
    n = len(keys)
    return ShardRows(keys, [f"sha-{k}-{seed}" for k in keys], [seed] * n, [seed] * n,
                     {"f": rng.normal(size=(n, DIM)).astype(np.float32),
                      "g": rng.normal(size=(n, 4)).astype(np.float32)})  # fmt: skip


def synthetic_store(path: Path, shards: int, rows: int, generation: int = 1, seed: int = 0) -> Path:
    """``shards`` shards of ``rows`` rows (keys ``c<k>/img<i>``), one build generation."""
    keys = [[f"c{(s * rows + i) % 3}/img{s * rows + i:06d}" for i in range(rows)]
            for s in range(shards)]  # fmt: skip
    return write_generation(path, generation, keys, seed)


def write_generation(path: Path, generation: int, keys: list[list[str]], seed: int = 0) -> Path:
    """One build generation of shards holding ``keys``, planned and committed as a build does
    (rows in sorted key order, class = first folder)."""
    prepare_store(path)
    if read_manifest(path) is None:
        write_manifest(path, manifest())
    with StoreLock(path), closing(catalog.connect(path, write=True)) as con:
        names = [shard_name(generation, i) for i in range(len(keys))]
        with catalog.transaction(con, path):
            catalog.add_plan(con, names, [(k, k.split("/")[0], "", n, seed, seed)
                                          for n, ks in zip(names, keys) for k in ks])  # fmt: skip
        writer = Writer(path, manifest(), con)
        for index, shard_keys in enumerate(keys):
            writer.put(names[index], shard_rows(shard_keys, seed + index))
        writer.close()
        compact_locked(path, con, manifest(), max_small=10**9)
    return path


def assert_same_store(a: Path, b: Path, layers: tuple[str, ...] = ("pool5", "fc7")) -> None:
    """Two stores read back the same: rows in order, features, labels, splits, classes, and
    what ``info`` says of their images and errors."""
    for layer in layers:
        x, y = load_features(a, layer), load_features(b, layer)
        assert list(x.keys) == list(y.keys)
        np.testing.assert_array_equal(x.X, y.X)
        np.testing.assert_array_equal(x.y, y.y)
        assert list(x.split) == list(y.split) and x.classes == y.classes
    info_a, info_b = store_info(a), store_info(b)
    assert (info_a.images, info_a.class_counts, info_a.errors, info_a.pending) == (
        info_b.images, info_b.class_counts, info_b.errors, info_b.pending)  # fmt: skip


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    mount = "mount -t tmpfs -o size=64k tmpfs /mnt"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


#: A small full disk: a tmpfs mounted in a user namespace (``unshare``), where one is allowed.
needs_mounts = pytest.mark.skipif(
    not _can_mount_tmpfs(), reason="needs unshare and a user-namespace tmpfs"
)


@contextlib.contextmanager
def lock_held_elsewhere(store: Path) -> Iterator[int]:
    """Another process holding ``store``'s lock for the block; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from pathlib import Path; "
         "from fstore.store.lock import StoreLock; "
         f"lock = StoreLock(Path({str(store)!r})).__enter__(); print('locked', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def benchmark_script(name: str):
    """``scripts/benchmarks/NAME.py`` imported as module ``NAME`` (its dataclasses look their
    module up, so it is registered in ``sys.modules``)."""
    import importlib.util

    path = Path(__file__).parents[2] / "scripts" / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
