"""The store at scale: a no-op model over generated tiny images, so that only fstore's own
pipeline, store and index are timed.

For each size: build images/s, the time of a no-op rebuild (nothing changed), of ``info``, of
reading one layer (and its peak memory), whether a read under a 256 open-file limit is right,
and the number of files; then the time of a build that adds 1 % more images (its index commit
is a journal entry) and of the ``fstore compact`` that folds that journal into the base index.
Run it with ``python -m fstore.benchmarks.scale 10000 100000``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fstore.build.config import BuildConfig
from fstore.build.pipeline import build
from fstore.images.preprocess import Preprocessing
from fstore.store import FeatureSet
from fstore.store import store as st

CLASSES = 10
TINY = Preprocessing(resize=8, crop=8)


@dataclass(frozen=True)
class ScalePoint:
    """One store size, measured."""

    images: int
    build_seconds: float
    build_images_per_second: float
    noop_rebuild_seconds: float
    info_seconds: float
    read_seconds: float
    read_peak_mib: float
    read_under_256_files: str
    files: int
    store_mib: float
    extend_seconds: float = 0.0
    extend_index: str = ""
    journal_read_seconds: float = 0.0
    fold_seconds: float = 0.0


def noop_model(path: Path) -> Path:
    """An ONNX model whose only output is the mean colour of the (tiny) input: ``(N, 3)``."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("noop", TensorProto.FLOAT, ["N", 3])
    mean = helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0)
    node = helper.make_node("Identity", ["m"], ["noop"])
    graph = helper.make_graph([mean, node], "noop", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def tiny_images(root: Path, count: int, variants: int = 64, start: int = 0) -> Path:
    """``count`` 8x8 JPEGs in ``CLASSES`` class folders (a few distinct pictures, repeated),
    numbered from ``start``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = []
    for _ in range(variants):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "JPEG")
        pictures.append(buffer.getvalue())
    for c in range(CLASSES):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        (root / f"class{i % CLASSES:02d}" / f"{i:08d}.jpg").write_bytes(pictures[i % variants])
    return root


def _read_under_limit(store: Path, limit: int = 256) -> str:
    """Read the layer in a child process whose RLIMIT_NOFILE is ``limit``; 'right' or the error."""
    code = (
        "import resource, sys, numpy as np; from pathlib import Path\n"
        "from fstore.store import load_features\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        "try:\n"
        f"    X = load_features(Path({str(store)!r}), 'noop').X\n"
        "    print('right' if np.isfinite(X).all() else 'NaN rows')\n"
        "except Exception as exc:\n"
        "    print(f'error: {exc}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


def measure(workdir: Path, count: int, model: Path, workers: int = 2) -> ScalePoint:
    """Build a store of ``count`` tiny images with the no-op model and time what it offers."""
    store = workdir / f"store-{count}.h5"
    for old in (workdir / f"images-{count}", st.sidecar(store)):  # from an earlier run
        shutil.rmtree(old, ignore_errors=True)
    store.unlink(missing_ok=True)
    images = tiny_images(workdir / f"images-{count}", count)
    config = BuildConfig(store=store, images=images, model=model, preprocessing=TINY,
                         provider="cpu", batch_size=256, shard_size=256, workers=workers,
                         threads=1)  # fmt: skip
    report = build(config, progress=False)
    start = time.perf_counter()
    again = build(config, progress=False)
    noop = time.perf_counter() - start
    assert again.images_computed == 0
    start = time.perf_counter()
    info = st.store_info(store)
    info_seconds = time.perf_counter() - start
    fs, read_seconds, peak = _traced_read(store)
    assert len(fs.keys) == count and np.isfinite(fs.X).all()
    read_under_limit = _read_under_limit(store)
    files = len(os.listdir(st.sidecar(store) / "shards"))
    extend, journal_read, fold = _extend_and_fold(config, count)
    return ScalePoint(
        images=count,
        build_seconds=report.seconds,
        build_images_per_second=report.images_per_second,
        noop_rebuild_seconds=noop,
        info_seconds=info_seconds,
        read_seconds=read_seconds,
        read_peak_mib=peak,
        read_under_256_files=read_under_limit,
        files=files,
        store_mib=info.size_bytes / 2**20,
        extend_seconds=extend[0],
        extend_index=extend[1],
        journal_read_seconds=journal_read,
        fold_seconds=fold,
    )


def _traced_read(store: Path) -> tuple[FeatureSet, float, float]:
    """Read the layer under ``tracemalloc``: the features, the seconds and the peak MiB."""
    tracemalloc.start()
    start = time.perf_counter()
    fs = st.load_features(store, "noop")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return fs, seconds, peak


def _extend_and_fold(config: BuildConfig, count: int) -> tuple[tuple[float, str], float, float]:
    """Add 1 % more images and build (timed; the index after it: journal entries or a fold),
    read one layer with that journal pending (timed), then time the ``fstore compact`` that
    folds it."""
    from fstore.store.compact import compact

    added = max(1, count // 100)
    tiny_images(config.images, added, start=count)
    start = time.perf_counter()
    build(config, progress=False)
    extend = time.perf_counter() - start
    journal = len(st.read_catalog(config.store).journal)
    how = f"{journal} journal entries" if journal else "folded"
    st.forget_cached_index()  # as a new process reads it: base catalog, entries, live index
    fs, journal_read, _ = _traced_read(config.store)
    assert len(fs.keys) == count + added
    start = time.perf_counter()
    compact(config.store)
    fold = time.perf_counter() - start
    assert not st.read_catalog(config.store).journal
    assert st.store_info_rows(config.store) == count + added
    return (extend, how), journal_read, fold


def driver_write_rate(workdir: Path, shards: int = 64, rows: int = 256, dim: int = 4096) -> dict:
    """MB/s of features one process writes into a store through the write stage (shard files
    with fsync and sha256, and the index), as the Ray driver does: fc7 is 4096 float32."""
    from fstore.build.write import Writer
    from fstore.images.discover import SplitSpec
    from fstore.store.lock import StoreLock, prepare_store

    store = workdir / "write-rate.h5"
    prepare_store(store)
    manifest = st.Manifest("", False, SplitSpec("none"), ("fc7",), {"fc7": (dim,)},
                           dtype="float32", fingerprint="write-rate")  # fmt: skip
    st.write_manifest(store, manifest)
    keys = [[f"c/{s:05d}-{i:04d}.jpg" for i in range(rows)] for s in range(shards)]
    st.write_plan(store, 1, keys)
    features = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
    start = time.perf_counter()
    with StoreLock(store):
        writer = Writer(store, manifest, None, index_every=2.0)
        for index, shard_keys in enumerate(keys):
            rows_ = st.ShardRows(shard_keys, ["0" * 64] * rows, [1] * rows, [1] * rows,
                                 features={"fc7": features})  # fmt: skip
            writer.put(st.shard_name(1, index), rows_)
        writer.close()
    seconds = time.perf_counter() - start
    megabytes = shards * rows * dim * 4 / 1e6
    return {"megabytes": megabytes, "seconds": seconds, "mb_per_s": megabytes / seconds,
            "fc7_images_per_s": shards * rows / seconds}  # fmt: skip


def run(sizes: list[int], workdir: Path) -> list[ScalePoint]:
    """Measure each size in ``workdir`` (which keeps the images and stores)."""
    workdir.mkdir(parents=True, exist_ok=True)
    model = noop_model(workdir / "noop.onnx")
    return [measure(workdir, n, model) for n in sizes]


def table(points: list[ScalePoint]) -> str:
    """A Markdown table of the points."""
    lines = ["| images | build img/s | no-op rebuild s | info s | read s | read peak MiB | "
             "read, ulimit -n 256 | files | store MiB | +1 % build s (index) | "
             "read with journal s | fold s |", "|" + "---:|" * 12]  # fmt: skip
    for p in points:
        lines.append(f"| {p.images:,} | {p.build_images_per_second:,.0f} | "
                     f"{p.noop_rebuild_seconds:.2f} | {p.info_seconds:.2f} | {p.read_seconds:.2f}"
                     f" | {p.read_peak_mib:.1f} | {p.read_under_256_files} | {p.files} | "
                     f"{p.store_mib:.1f} | {p.extend_seconds:.2f} ({p.extend_index}) | "
                     f"{p.journal_read_seconds:.2f} | {p.fold_seconds:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=Path("scale-bench"))
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument("--write-rate", action="store_true",
                        help="Measure the write stage's MB/s of fc7 features instead.")  # fmt: skip
    args = parser.parse_args(argv)
    if args.write_rate:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(driver_write_rate(args.workdir), indent=1))
        return
    points = run(args.sizes, args.workdir)
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=1))
    else:
        print(table(points))
    print(f"load average {os.getloadavg()[0]:.2f}; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
