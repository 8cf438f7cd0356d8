"""``fstore build``: image folder → batched ONNX Runtime → shards → index.

Three stages run at once (reader → model → writer, one module each in spirit):

* **read**: a thread pool reads, hashes, decodes and preprocesses images (Pillow and NumPy
  release the GIL) and assembles the batches of one shard at a time, a few batches ahead;
* **infer**: the calling thread runs each batch through ONNX Runtime;
* **write**: a writer thread writes each finished shard (temporary name, fsync, rename) and
  rebuilds the index, so writing never stalls inference.

Work is planned before it starts: the images to compute are cut into shards of fixed lists,
and the plan is saved. A killed build, run again, finds the shards already on disk, skips them,
and computes the rest of the same plan; the store ends as an uninterrupted build would leave it.
"""

from __future__ import annotations

import hashlib
import json
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from fstore import __version__
from fstore.errors import FstoreError, ModelError, StoreError
from fstore.featurestore import store as st
from fstore.featurestore.compact import compact_locked
from fstore.featurestore.dataset import ImageItem, SplitSpec, is_split_layout, scan
from fstore.featurestore.preprocess import ImageDecodeError, Preprocessing, load_image
from fstore.featurestore.ray_engine import RayOptions
from fstore.featurestore.write import StoreLock, Writer, prepare_store
from fstore.runtime.metadata import ModelInfo
from fstore.runtime.providers import resolve_provider
from fstore.runtime.session import OrtBackend
from fstore.runtime.weights import WeightsSource

DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``fstore build`` is asked to do.

    Attributes:
        store: the index file (``fstore.h5``).
        images: the image folder; ``None`` to reuse the one recorded in the store.
        layers: layers to store; ``None`` to reuse the store's.
        weights: VGG16 weights; ``None`` for the store's (or ImageNet for a new store).
        model: an ONNX file to use instead of exporting VGG16.
        preprocessing: for a ``model`` without fstore metadata.
        provider: ``cpu``, ``cuda`` or ``auto``.
        batch_size: images per ONNX Runtime run.
        workers: decoding threads.
        shard_size: images per shard (a multiple of ``batch_size`` keeps batches aligned).
        dtype: storage type of the features, ``float32`` or ``float16``.
        split: how train/test is assigned.
        threads: ONNX Runtime intra-op threads (``None``: all cores).
        index_every: minimum seconds between two index rebuilds during a build.
        engine: ``local`` (this process) or ``ray`` (Ray actors; see :mod:`ray_engine`).
        ray: where and how wide the Ray engine runs.
        precision: ``fp32``, ``int8`` (calibrated on the build's images) or ``fp16``.
    """

    store: Path
    images: Path | None = None
    layers: tuple[str, ...] | None = None
    weights: WeightsSource | None = None
    model: Path | None = None
    preprocessing: Preprocessing | None = None
    provider: str = "auto"
    batch_size: int = 32
    workers: int = 2
    shard_size: int = 256
    dtype: str = "float32"
    split: SplitSpec | None = None
    threads: int | None = None
    index_every: float = 2.0
    engine: str = "local"
    ray: RayOptions | None = None
    precision: str = "fp32"


@dataclass
class BuildReport:
    """What a build did and how long each stage took (seconds)."""

    store: str
    provider: str
    layers: tuple[str, ...]
    images_total: int = 0
    images_done_before: int = 0
    images_computed: int = 0
    errors: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    shards_written: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    inference_seconds: float = 0.0
    write_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    store_bytes: int = 0

    def absorb(self, times: StageTimes) -> None:
        self.decode_seconds += times.decode
        self.inference_seconds += times.inference
        self.images_computed += times.images
        self.errors += times.errors
        for k, v in times.errors_by_reason.items():
            self.errors_by_reason[k] = self.errors_by_reason.get(k, 0) + v

    @property
    def images_per_second(self) -> float:
        return self.images_computed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["images_per_second"] = self.images_per_second
        return data


# --------------------------------------------------------------------------- model


def _resolve_model(
    config: BuildConfig, manifest: st.Manifest | None, images: Path, log: Callable[[str], None]
) -> tuple[Path, ModelInfo | None, tuple[str, ...]]:
    """The ONNX file to run, its fstore metadata (if any) and the layers to store."""
    from fstore.export.onnx_export import ensure_model, read_model_info

    layers = config.layers or (manifest.layers if manifest else None)
    if config.model is not None:
        if not config.model.is_file():
            raise ModelError(f"model file {config.model} does not exist")
        try:
            info = read_model_info(config.model)
        except ModelError:
            info = None
        return config.model, info, tuple(layers) if layers else ()
    if not layers:
        raise FstoreError("no layer given: pass --layer (e.g. --layer fc7)")
    weights = config.weights
    if weights is None and manifest is not None:
        weights = _weights_from_origin(manifest.provenance.get("weights_origin", "imagenet"))
    weights = weights or WeightsSource("imagenet")
    preprocessing = _requested_preprocessing(config, manifest)
    precision = config.precision
    if manifest is not None and config.precision == "fp32":
        precision = manifest.provenance.get("precision", "fp32")
    path = ensure_model(
        layers,
        weights,
        preprocessing=preprocessing,
        precision=precision,
        calibration=images,
        log=log,
    )
    return path, read_model_info(path), tuple(layers)


def _requested_preprocessing(config: BuildConfig, manifest: st.Manifest | None) -> Preprocessing:
    """The options' preprocessing, else the store's, else torchvision's ImageNet default."""
    if config.preprocessing is not None:
        return config.preprocessing
    if manifest is not None and "preprocessing" in manifest.provenance:
        return Preprocessing.from_json(manifest.provenance["preprocessing"])
    return Preprocessing()


def _weights_from_origin(origin: str) -> WeightsSource:
    if origin.startswith("random:seed="):
        return WeightsSource("random", seed=int(origin.split("=", 1)[1]))
    if origin.startswith("file:"):
        return WeightsSource("file", path=Path(origin[len("file:") :]))
    return WeightsSource("imagenet")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(
    info: ModelInfo | None, model_sha: str, preprocessing: Preprocessing, layers: tuple[str, ...]
) -> str:
    """What decides the features: weights, layers, precision and preprocessing."""
    if info is not None:
        parts = {"weights": info.weights_sha256, "precision": info.precision}
    else:
        parts = {"model": model_sha}
    parts.update({"layers": list(layers), "preprocessing": json.loads(preprocessing.to_json())})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- planning


@dataclass
class Work:
    """The shards to compute in this run: (shard name, its items), in order."""

    shards: list[tuple[str, list[ImageItem]]]
    done_before: int
    total: int


def _stat(path: Path) -> tuple[int, int]:
    try:
        s = path.stat()
        return s.st_size, s.st_mtime_ns
    except OSError:
        return -1, -1


def plan_work(store: Path, root: Path, items: list[ImageItem], shard_size: int) -> Work:
    """Resume unfinished shards of earlier plans, then plan new and changed images.

    An image is up to date when the store's record of its key has the same size and mtime, or
    else the same sha256. Everything else goes into a new plan, saved before work starts.
    """
    by_key = {item.key: item for item in items}
    summaries = st.finished_shards(store)
    view = st.live_rows(summaries.values())
    known = {
        k: (sz, mt, sha) for k, sz, mt, sha in zip(view.keys, view.size, view.mtime_ns, view.sha256)
    }
    known.update(
        {e["key"]: (e["size"], e["mtime_ns"], e["sha256"]) for e in view.errors if not e["stored"]}
    )
    shards: list[tuple[str, list[ImageItem]]] = []
    planned: set[str] = set()
    plans = st.read_plans(store)
    for generation, plan in plans:
        for index, keys in enumerate(plan):
            name = st.shard_name(generation, index)
            if name in summaries:
                continue
            shards.append((name, [by_key.get(k) or ImageItem(k, root / k) for k in keys]))
            planned.update(keys)

    def up_to_date(item: ImageItem) -> bool:
        record = known.get(item.key)
        if record is None:
            return False
        size, mtime = _stat(item.path)
        if (size, mtime) == (record[0], record[1]):
            return True
        return bool(record[2]) and size >= 0 and _safe_sha(item.path) == record[2]

    todo = [it for it in items if it.key not in planned and not up_to_date(it)]
    if todo:
        generation = max((g for g, _ in plans), default=0) + 1
        chunks = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
        st.write_plan(store, generation, [[it.key for it in chunk] for chunk in chunks])
        shards.extend((st.shard_name(generation, i), chunk) for i, chunk in enumerate(chunks))
    pending = sum(len(s) for _, s in shards)
    return Work(shards, max(0, len(items) - pending), len(items))


def _safe_sha(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


# --------------------------------------------------------------------------- reading


@dataclass
class Decoded:
    item: ImageItem
    array: np.ndarray | None
    sha256: str
    size: int
    mtime_ns: int
    error: str | None = None
    warning: str | None = None
    seconds: float = 0.0


def read_item(item: ImageItem, preprocessing: Preprocessing) -> Decoded:
    """Read, hash, decode and preprocess one image; never raises for a bad file."""
    start = time.perf_counter()
    size, mtime = _stat(item.path)
    try:
        data = item.path.read_bytes()
    except OSError as exc:
        return Decoded(
            item,
            None,
            "",
            size,
            mtime,
            f"unreadable: {exc.strerror or exc}",
            seconds=time.perf_counter() - start,
        )
    sha = hashlib.sha256(data).hexdigest()
    try:
        array, warning = load_image(data, preprocessing)
    except ImageDecodeError as exc:
        return Decoded(item, None, sha, size, mtime, str(exc), seconds=time.perf_counter() - start)
    return Decoded(item, array, sha, size, mtime, None, warning, time.perf_counter() - start)


@dataclass
class Batch:
    shard: str
    decoded: list[Decoded]  # good and bad, in shard order
    last_of_shard: bool


def iter_batches(
    work: Work, preprocessing: Preprocessing, batch_size: int, workers: int, ahead: int = 4
) -> Iterator[Batch]:
    """Decode in a thread pool, in order, a few batches ahead of the consumer."""
    out: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def produce() -> None:
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                for name, items in work.shards:
                    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
                    for i, chunk in enumerate(chunks):
                        if stop.is_set():
                            return
                        decoded = list(pool.map(lambda it: read_item(it, preprocessing), chunk))
                        out.put(Batch(name, decoded, i == len(chunks) - 1))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer to re-raise
            out.put(exc)
            return
        out.put(None)

    thread = threading.Thread(target=produce, name="fstore-reader", daemon=True)
    thread.start()
    try:
        while True:
            got = out.get()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        while thread.is_alive():
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _new_manifest(
    config: BuildConfig,
    images: Path,
    model_path: Path,
    info: ModelInfo | None,
    layers: tuple[str, ...],
    backend: OrtBackend | None,
    preprocessing: Preprocessing,
    model_sha: str,
) -> st.Manifest:
    import onnxruntime as ort

    shapes = {}
    for layer in layers:
        if info is not None and layer in info.shapes:
            shapes[layer] = tuple(info.shapes[layer])
        else:
            assert backend is not None
            probe = backend.run(
                np.zeros((1, 3, preprocessing.crop, preprocessing.crop), np.float32)
            )
            shapes.update({k: tuple(int(d) for d in v.shape[1:]) for k, v in probe.items()})
    split_layout = is_split_layout(images)
    split = config.split or SplitSpec("folders" if split_layout else "none")
    provenance = {
        "model_path": str(model_path.resolve()),
        "model_sha256": model_sha,
        "layers": list(layers),
        "preprocessing": preprocessing.to_json(),
        "weights_origin": info.weights_origin if info else "unknown (external model)",
        "weights_sha256": info.weights_sha256 if info else "",
        "precision": info.precision if info else "unknown",
        "storage_dtype": config.dtype,
        "fstore_version": __version__,
        "onnxruntime_version": ort.__version__,
        "provider": backend.provider if backend else "",
    }
    return st.Manifest(
        str(images.resolve()),
        split_layout,
        split,
        layers,
        shapes,
        config.dtype,
        _fingerprint(info, model_sha, preprocessing, layers),
        provenance,
    )


def build(
    config: BuildConfig, log: Callable[[str], None] = lambda _: None, progress: bool | None = None
) -> BuildReport:
    """Fill (or extend, or resume) the store ``config.store``; returns what was done.

    ``progress``: show a progress bar (``None``: only on a terminal).
    """
    start = time.perf_counter()
    if config.dtype not in DTYPES:
        raise FstoreError(
            f"unknown storage dtype {config.dtype!r}; choose from {', '.join(DTYPES)}"
        )
    if config.engine not in ("local", "ray"):
        raise FstoreError(f"unknown engine {config.engine!r}; choose local or ray")
    if config.engine == "ray":
        from fstore.featurestore.ray_engine import import_ray

        import_ray()
    if config.batch_size < 1 or config.shard_size < 1:
        raise FstoreError("--batch-size and --shard-size must be at least 1")
    store = config.store
    manifest = st.read_manifest(store) if st.sidecar(store).exists() else None
    if store.exists() and manifest is None:
        raise StoreError(f"{store} exists but is not an fstore store; refusing to overwrite it")
    images = config.images or (Path(manifest.image_root) if manifest else None)
    if images is None:
        raise FstoreError(f"no image folder given and no store at {store} to take it from")
    items = scan(images)  # checks the folder before anything is written
    prepare_store(store)
    with StoreLock(store):
        removed = st.remove_temporaries(store)
        if removed:
            log(f"removed {removed} temporary file(s) left by an interrupted build")
        model_path, info, layers = _resolve_model(config, manifest, images, log)
        preprocessing = info.preprocessing if info else _requested_preprocessing(config, manifest)
        model_sha = file_sha256(model_path)
        backend: OrtBackend | None = None
        if manifest is None or info is None:  # a foreign model's output shapes need a run
            backend = OrtBackend.load(
                model_path, config.provider, outputs=layers or None, threads=config.threads
            )
            layers = layers or backend.outputs
        fresh = _new_manifest(
            config, images, model_path, info, layers, backend, preprocessing, model_sha
        )
        if manifest is None:
            manifest = fresh
            st.write_manifest(store, manifest)
        else:
            _check_compatible(store, manifest, fresh, config)
        work = plan_work(store, images, items, config.shard_size)
        pending = sum(len(items) for _, items in work.shards)
        local = config.engine == "local"
        if pending and backend is None and local:
            backend = OrtBackend.load(
                model_path, config.provider, outputs=layers, threads=config.threads
            )
        if backend is not None:
            provider = backend.provider
        elif local:
            provider = resolve_provider(config.provider)
        else:
            provider = config.provider
        if pending:
            log(
                f"computing {pending} images ({', '.join(layers)}) on {provider.upper()} "
                f"with {model_path.name}" + ("" if local else " (ray engine)")
            )
        report = BuildReport(
            str(store),
            provider,
            tuple(layers),
            images_total=work.total,
            images_done_before=work.done_before,
        )
        summaries = list(st.finished_shards(store).values())
        manifest = replace(manifest, provenance={**manifest.provenance, "provider": provider})
        writer = Writer(store, manifest, summaries, config.index_every)
        try:
            if pending and local:
                assert backend is not None
                _run(work, backend, preprocessing, config, writer, report, progress)
            elif pending:
                from fstore.featurestore import ray_engine

                report.provider = ray_engine.run(
                    work, model_path, tuple(layers), layer_dims(manifest), preprocessing,
                    Path(manifest.image_root), config, writer, report,
                    config.ray or RayOptions(), progress, log,
                )  # fmt: skip
        finally:
            writer.close()
        compact_locked(store)  # merges small shard files into segments once there are many
        report.write_seconds = writer.seconds
        report.shards_written = writer.shards_written
    report.seconds = time.perf_counter() - start
    report.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.store_bytes = st.store_info(store).size_bytes
    return report


def _check_compatible(store: Path, old: st.Manifest, new: st.Manifest, config: BuildConfig) -> None:
    if old.layers != new.layers:
        raise StoreError(
            f"store {store} holds layers {', '.join(old.layers)}, not {', '.join(new.layers)}; "
            "build another store (--store) for other layers"
        )
    if old.fingerprint != new.fingerprint:
        raise StoreError(
            f"store {store} was built with another model or preprocessing "
            f"(weights {old.provenance.get('weights_origin')}); refusing to mix features: "
            "use --store for a new store"
        )
    if old.dtype != new.dtype:
        raise StoreError(f"store {store} stores {old.dtype}, not {new.dtype}")
    if config.split is not None and config.split != old.split:
        raise StoreError(f"store {store} was built with split {old.split.to_json()}")
    if config.images is not None and str(config.images.resolve()) != old.image_root:
        raise StoreError(f"store {store} is built from {old.image_root}, not {config.images}")


@dataclass
class StageTimes:
    """Seconds spent per stage, and what was counted (summed over decode threads)."""

    decode: float = 0.0
    inference: float = 0.0
    images: int = 0
    errors: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)


class ShardAssembler:
    """Runs decoded batches through a backend and gathers them into shards.

    The one place where a batch becomes rows, used by the local pipeline, the Ray workers and
    ``extract_features``. On CUDA, batches are padded to ``pad_to`` so every run has the shape
    cuDNN tuned for.
    """

    def __init__(self, backend: OrtBackend, dims: dict[str, int], pad_to: int | None = None):
        self.backend, self.dims, self.pad_to = backend, dims, pad_to
        self.times = StageTimes()
        self._reset()

    def _reset(self) -> None:
        self.rows = st.ShardRows([], [], [], [], {})
        self._outputs: dict[str, list[np.ndarray]] = {k: [] for k in self.backend.outputs}

    def add(self, batch: Batch) -> st.ShardRows | None:
        """Process one batch; returns the finished shard's rows after its last batch."""
        rows, times = self.rows, self.times
        good = [d for d in batch.decoded if d.array is not None]
        times.decode += sum(d.seconds for d in batch.decoded)
        for d in batch.decoded:
            if d.error is None and d.warning is None:
                continue
            reason = d.error or d.warning
            rows.errors.append({"key": d.item.key, "reason": reason, "sha256": d.sha256,
                                "stored": d.error is None, "size": d.size,
                                "mtime_ns": d.mtime_ns})  # fmt: skip
            if d.error is not None:
                times.errors += 1
                kind = reason.split(":")[0]
                times.errors_by_reason[kind] = times.errors_by_reason.get(kind, 0) + 1
        if good:
            x = np.stack([d.array for d in good])
            if self.pad_to and len(good) < self.pad_to:
                x = np.concatenate([x, np.zeros((self.pad_to - len(good),) + x.shape[1:], x.dtype)])
            t0 = time.perf_counter()
            result = self.backend.run(x)
            times.inference += time.perf_counter() - t0
            for layer in self.backend.outputs:
                self._outputs[layer].append(result[layer][: len(good)].reshape(len(good), -1))
            for d in good:
                rows.keys.append(d.item.key)
                rows.sha256.append(d.sha256)
                rows.size.append(d.size)
                rows.mtime_ns.append(d.mtime_ns)
        times.images += len(good)
        if not batch.last_of_shard:
            return None
        rows.features = {
            layer: np.concatenate(chunks) if chunks else np.zeros((0, self.dims[layer]), np.float32)
            for layer, chunks in self._outputs.items()
        }
        self._reset()
        return rows


def layer_dims(manifest: st.Manifest) -> dict[str, int]:
    return {layer: int(np.prod(shape)) for layer, shape in manifest.shapes.items()}


def _run(
    work: Work,
    backend: OrtBackend,
    preprocessing: Preprocessing,
    config: BuildConfig,
    writer: Writer,
    report: BuildReport,
    progress: bool | None,
) -> None:
    from tqdm import tqdm

    pending = sum(len(items) for _, items in work.shards)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=pending, unit="img", disable=not show, dynamic_ncols=True, desc="build")
    pad_to = config.batch_size if backend.provider == "cuda" else None
    assembler = ShardAssembler(backend, layer_dims(writer.manifest), pad_to)
    try:
        for batch in iter_batches(work, preprocessing, config.batch_size, config.workers):
            rows = assembler.add(batch)
            bar.update(len(batch.decoded))
            if rows is not None:
                writer.put(batch.shard, rows)
    finally:
        bar.close()
        report.absorb(assembler.times)


def extract_features(
    paths: list[Path],
    model_path: Path,
    layers: tuple[str, ...],
    provider: str = "cpu",
    batch_size: int = 16,
    preprocessing: Preprocessing | None = None,
) -> tuple[dict[str, np.ndarray], list[Path], list[tuple[Path, str]]]:
    """Features of images outside any store (for ``classify``): (features, good paths, errors)."""
    from fstore.export.onnx_export import read_model_info

    if preprocessing is None:
        preprocessing = read_model_info(model_path).preprocessing
    backend = OrtBackend.load(model_path, provider, outputs=layers)
    items = [ImageItem(str(p), p) for p in paths]
    if not items:
        return {layer: np.zeros((0, 0), np.float32) for layer in layers}, [], []
    dims = {layer: 0 for layer in layers}
    assembler = ShardAssembler(backend, dims)
    work = Work([("extract", items)], 0, len(items))
    rows = None
    for batch in iter_batches(work, preprocessing, batch_size, workers=2):
        rows = assembler.add(batch) or rows
    assert rows is not None
    errors = [(Path(e["key"]), e["reason"]) for e in rows.errors if not e["stored"]]
    return rows.features, [Path(k) for k in rows.keys], errors
