"""The store at scale: a no-op model over generated tiny images, so that only fstore's own
pipeline, store and index are timed.

For each size: build images/s, the time of a no-op rebuild (nothing changed), of ``info``, of
reading one layer (and its peak memory), whether a read under a 256 open-file limit is right,
and the number of files; then the time of a build that adds 1 % more images and the seconds
its shard commits took. ``--catalog N`` instead simulates a catalog of N rows (generated keys
and segment files, no images): commit, a 1 % extension, open, a 10,000-key lookup, a streamed
layer and the view.
Run it with ``python scripts/benchmarks/scale.py 10000 100000``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fstore.fsutil import peak_rss_mib
from fstore.images.preprocess import Preprocessing
from fstore.pipeline.config import BuildConfig
from fstore.pipeline.model import build_store
from fstore.store import FeatureSet, catalog, load_features, sidecar, store_info
from fstore.store.layout import Manifest, write_manifest

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
    extend_write_seconds: float = 0.0


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
    for old in (workdir / f"images-{count}", sidecar(store)):  # from an earlier run
        shutil.rmtree(old, ignore_errors=True)
    store.unlink(missing_ok=True)
    images = tiny_images(workdir / f"images-{count}", count)
    config = BuildConfig(
        store=store,
        images=images,
        model=model,
        preprocessing=TINY,
        provider="cpu",
        batch_size=256,
        shard_size=256,
        workers=workers,
        threads=1,
    )
    report = build_store(config, progress=False)
    start = time.perf_counter()
    again = build_store(config, progress=False)
    noop = time.perf_counter() - start
    assert again.images_computed == 0
    start = time.perf_counter()
    info = store_info(store)
    info_seconds = time.perf_counter() - start
    fs, read_seconds, peak = _traced_read(store)
    assert len(fs.keys) == count and np.isfinite(fs.X).all()
    read_under_limit = _read_under_limit(store)
    files = len(os.listdir(sidecar(store) / "shards"))
    extend, extend_write = _extend(config, count)
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
        extend_seconds=extend,
        extend_write_seconds=extend_write,
    )


def _traced_read(store: Path) -> tuple[FeatureSet, float, float]:
    """Read the layer under ``tracemalloc``: the features, the seconds and the peak MiB."""
    tracemalloc.start()
    start = time.perf_counter()
    fs = load_features(store, "noop")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return fs, seconds, peak


def _extend(config: BuildConfig, count: int) -> tuple[float, float]:
    """Add 1 % more images and build: the build's seconds, and its write stage's (shard files
    and their catalog transactions)."""
    added = max(1, count // 100)
    tiny_images(config.images, added, start=count)
    start = time.perf_counter()
    report = build_store(config, progress=False)
    assert report.images_computed == added
    return time.perf_counter() - start, report.write_seconds


def _manifest(layer: str, dim: int, fingerprint: str) -> Manifest:
    """A store of one generated layer, no images and no split."""
    split = {"method": "none", "train_per_class": 0, "seed": 0}
    return Manifest(image_root="", split_layout=False, split=split, layers=(layer,),
                    shapes={layer: (dim,)}, dtype="float32", fingerprint=fingerprint)  # fmt: skip


def _sim_key(i: int) -> str:
    return f"c{i % CLASSES}/{i:09d}.jpg"


def _sim_build(store: Path, first: int, count: int, generation: int, seg: int = 65_536) -> float:
    """Plan ``count`` generated images from number ``first`` in one transaction and commit them
    in segment files of ``seg`` rows, as a build does (in key order): the seconds it took."""
    from fstore.pipeline.plan import shard_name
    from fstore.store.shards import write_shard

    start = time.perf_counter()
    keys = sorted(_sim_key(i) for i in range(first, first + count))
    chunks = [keys[at : at + seg] for at in range(0, count, seg)]
    names = [shard_name(generation, s) for s in range(len(chunks))]
    with closing(catalog.connect(store, write=True)) as con:
        with catalog.transaction(con, store):
            planned = ((k, k[:2], "", n, 1, 1) for n, c in zip(names, chunks) for k in c)
            catalog.add_plan(con, names, planned)
        for name, chunk in zip(names, chunks):
            values = {"v": np.arange(len(chunk), dtype=np.float32)[:, None]}
            info = write_shard(store, f"{name}.h5", chunk, values, "float32")
            images = [(k, i, "", 1, 1, None) for i, k in enumerate(chunk)]
            catalog.commit_shard(con, store, name, info, images)
    return time.perf_counter() - start


def _stream(store: Path) -> tuple[int, float, float]:
    """Stream the layer in a child process: rows, seconds and the child's peak RSS in MiB (what
    the stream holds, without tracemalloc's slowdown of every allocation).

    The peak is the child's own (:func:`fstore.fsutil.peak_rss_mib`), not the forking parent's.
    """
    code = (
        "import time; from pathlib import Path\n"
        "from fstore.fsutil import peak_rss_mib\n"
        "from fstore.store import iter_features\n"
        "start = time.perf_counter()\n"
        f"rows = sum(len(b.keys) for b in iter_features(Path({str(store)!r}), 'v'))\n"
        "print(rows, time.perf_counter() - start, peak_rss_mib())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows, seconds, rss = out.stdout.split()
    return int(rows), float(seconds), float(rss)


def simulated_catalog(workdir: Path, rows: int, lookups: int = 10_000, view: bool = True) -> dict:
    """A store of ``rows`` generated rows (1 value each, segments of 65,536 rows, no images):
    seconds to plan and commit them, to commit a 1 % extension, to open the catalog, look up
    ``lookups`` keys, stream the layer (and the peak RSS of a process that only streams) and,
    with ``view``, write the view ``fstore.h5``."""
    from fstore.store.lock import prepare_store
    from fstore.store.shards import refresh_view

    store = workdir / f"catalog-{rows}.h5"
    shutil.rmtree(sidecar(store), ignore_errors=True)
    store.unlink(missing_ok=True)
    prepare_store(store)
    write_manifest(store, manifest := _manifest("v", 1, "sim"))
    added = max(1, rows // 100)
    timings = {"rows": rows, "commit_seconds": _sim_build(store, 0, rows, 1)}
    timings["extend_rows"] = added
    timings["extend_seconds"] = _sim_build(store, rows, added, 2)
    start = time.perf_counter()
    con = catalog.connect(store)
    timings["open_seconds"] = time.perf_counter() - start
    wanted = [_sim_key(i) for i in np.random.default_rng(0).integers(0, rows, lookups)]
    start = time.perf_counter()
    query = "SELECT shard, row FROM images WHERE key = ?"
    found = [con.execute(query, (k,)).fetchone() for k in wanted]
    timings["lookup_seconds"] = time.perf_counter() - start
    assert all(found)
    streamed, timings["stream_seconds"], timings["stream_peak_rss_mib"] = _stream(store)
    assert streamed == rows + added
    con.close()
    if view:
        start = time.perf_counter()
        with closing(catalog.connect(store, write=True)) as writer:
            refresh_view(store, writer, manifest)
        timings["view_seconds"] = time.perf_counter() - start
    return timings


def driver_write_rate(workdir: Path, shards: int = 64, rows: int = 256, dim: int = 4096) -> dict:
    """MB/s of features one process writes into a store through the write stage (shard files
    with fsync and sha256, and their catalog commits), as the Ray driver does: fc7 is 4096
    float32."""
    from fstore.pipeline.plan import shard_name
    from fstore.pipeline.write import Writer
    from fstore.store.lock import StoreLock, prepare_store
    from fstore.store.shards import ShardRows

    store = workdir / "write-rate.h5"
    shutil.rmtree(sidecar(store), ignore_errors=True)
    prepare_store(store)
    manifest = _manifest("fc7", dim, "write-rate")
    write_manifest(store, manifest)
    keys = [[f"c/{s:05d}-{i:04d}.jpg" for i in range(rows)] for s in range(shards)]
    features = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
    start = time.perf_counter()
    with StoreLock(store), closing(catalog.connect(store, write=True)) as con:
        with catalog.transaction(con, store):
            names = [shard_name(1, i) for i in range(shards)]
            planned = [(k, "c", "", names[i], 1, 1) for i, ks in enumerate(keys) for k in ks]
            catalog.add_plan(con, names, planned)
        writer = Writer(store, manifest, con)
        for index, shard_keys in enumerate(keys):
            rows_ = ShardRows(
                shard_keys, ["0" * 64] * rows, [1] * rows, [1] * rows, features={"fc7": features}
            )
            writer.put(shard_name(1, index), rows_)
        writer.close()
    seconds = time.perf_counter() - start
    megabytes = shards * rows * dim * 4 / 1e6
    return {
        "megabytes": megabytes,
        "seconds": seconds,
        "mb_per_s": megabytes / seconds,
        "fc7_images_per_s": shards * rows / seconds,
    }


def run(sizes: list[int], workdir: Path) -> list[ScalePoint]:
    """Measure each size in ``workdir`` (which keeps the images and stores)."""
    workdir.mkdir(parents=True, exist_ok=True)
    model = noop_model(workdir / "noop.onnx")
    return [measure(workdir, n, model) for n in sizes]


def table(points: list[ScalePoint]) -> str:
    """A Markdown table of the points."""
    lines = [
        "| images | build img/s | no-op rebuild s | info s | read s | read peak MiB | "
        "read, ulimit -n 256 | files | store MiB | +1 % build s | its write s |",
        "|" + "---:|" * 11,
    ]
    for p in points:
        lines.append(
            f"| {p.images:,} | {p.build_images_per_second:,.0f} | "
            f"{p.noop_rebuild_seconds:.2f} | {p.info_seconds:.2f} | {p.read_seconds:.2f}"
            f" | {p.read_peak_mib:.1f} | {p.read_under_256_files} | {p.files} | "
            f"{p.store_mib:.1f} | {p.extend_seconds:.2f} | "
            f"{p.extend_write_seconds:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=Path("scale-bench"))
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument(
        "--write-rate",
        action="store_true",
        help="Measure the write stage's MB/s of fc7 features instead.",
    )
    parser.add_argument(
        "--catalog", type=int, metavar="ROWS", help="Simulate a catalog of this many rows instead."
    )
    parser.add_argument(
        "--no-view",
        action="store_true",
        help="With --catalog: skip rewriting fstore.h5 (beyond its practical size, docs/store.md).",
    )
    args = parser.parse_args(argv)
    if args.catalog:
        args.workdir.mkdir(parents=True, exist_ok=True)
        timings = simulated_catalog(args.workdir, args.catalog, view=not args.no_view)
        print(json.dumps(timings, indent=1))
        return
    if args.write_rate:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(driver_write_rate(args.workdir), indent=1))
        return
    points = run(args.sizes, args.workdir)
    if args.json:
        print(json.dumps([asdict(p) for p in points], indent=1))
    else:
        print(table(points))
    print(f"load average {os.getloadavg()[0]:.2f}; peak memory {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
