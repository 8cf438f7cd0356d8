"""The run stage of ``fstore build``: uint8 batches through a backend, gathered into shards.

:class:`ShardAssembler` is the one place where a batch becomes rows, used by the local build,
the Ray workers and :func:`extract_features`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.images.discover import ImageItem
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import MAX_IMAGE_BYTES
from fstore.images.views import SEPARATOR, ViewPlan, plan_views, split_layers, view_layers
from fstore.pipeline.read import Batch, Progress, Work, iter_batches
from fstore.pipeline.write import Writer
from fstore.store import layout
from fstore.store.shards import ShardRows


def probe_shapes(backend, preprocessing: Preprocessing) -> dict[str, tuple[int, ...]]:
    """Output shapes (without the batch axis) of a model, from one run on a black image."""
    black = np.zeros((1, preprocessing.crop, preprocessing.crop, 3), np.uint8)
    outputs = backend.run(black)
    return {k: tuple(int(d) for d in v.shape[1:]) for k, v in outputs.items()}


@dataclass
class StageTimes:
    """Seconds spent per stage, and what was counted (summed over decode threads)."""

    decode: float = 0.0
    inference: float = 0.0
    images: int = 0
    errors: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    #: per view set (and ``plain``): views per image, model seconds, model images/s
    view_costs: dict[str, dict] = field(default_factory=dict)

    def count_error(self, reason: str) -> None:
        self.errors += 1
        kind = reason.split(":")[0]
        self.errors_by_reason[kind] = self.errors_by_reason.get(kind, 0) + 1


class ShardAssembler:
    """Runs decoded batches through a backend and gathers them into shards.

    The model normalises the uint8 pixels in its graph; on CUDA the backend pads short batches
    to its fixed shape itself. With ``views``, every view of a batch's images goes through the
    model in one run, and each model layer becomes its plain and its view-set layers.
    """

    def __init__(self, backend, dims: dict[str, int], views: ViewPlan | None = None):
        self.backend, self.dims, self.views = backend, dims, views
        self.times = StageTimes()
        self._reset()

    def _reset(self) -> None:
        self.rows = ShardRows([], [], [], [], {})
        self._outputs: dict[str, list[np.ndarray]] = {k: [] for k in self.dims}

    def _record(self, batch: Batch) -> None:
        for d in batch.decoded:
            if d.error is None and d.warning is None:
                continue
            reason = d.error or d.warning
            self.rows.errors.append({"key": d.item.key, "reason": reason, "sha256": d.sha256,
                                     "stored": d.error is None, "size": d.size,
                                     "mtime_ns": d.mtime_ns})  # fmt: skip
            if d.error is not None:
                self.times.count_error(reason)

    def _infer(self, batch: Batch, good: list, result: dict | None) -> None:
        if result is None:
            t0 = time.perf_counter()
            result = self.backend.run(batch.model_input)
            self.times.inference += time.perf_counter() - t0
        if self.views is None:
            result = {k: v[: len(good)].reshape(len(good), -1) for k, v in result.items()}
        else:
            result = self.views.pool(result, len(good))
        for layer, chunks in self._outputs.items():
            chunks.append(result[layer])
        for d in good:
            self.rows.keys.append(d.item.key)
            self.rows.sha256.append(d.sha256)
            self.rows.size.append(d.size)
            self.rows.mtime_ns.append(d.mtime_ns)

    def add(self, batch: Batch, result: dict | None = None) -> ShardRows | None:
        """Process one batch; returns the finished shard's rows after its last batch.

        ``result`` is the backend's output for ``batch.pixels`` when the caller ran it already
        (:func:`stream_batches`); otherwise the batch is run here.
        """
        good = batch.good
        self.times.decode += sum(d.seconds for d in batch.decoded)
        self._record(batch)
        if good:
            self._infer(batch, good, result)
        self.times.images += len(good)
        if not batch.last_of_shard:
            return None
        rows = self.rows
        rows.features = {
            layer: np.concatenate(chunks) if chunks else np.zeros((0, self.dims[layer]), np.float32)
            for layer, chunks in self._outputs.items()
        }
        self._reset()
        return rows


def layer_dims(manifest: layout.Manifest) -> dict[str, int]:
    return {layer: int(np.prod(shape)) for layer, shape in manifest.shapes.items()}


@dataclass(frozen=True)
class RunOptions:
    """How the local run stage reads: batch size, decode workers, decode mode, the largest
    image file read."""

    batch_size: int
    workers: int | None
    decode: str
    progress: bool | None = None
    pool: str = "threads"
    views: ViewPlan | None = None
    max_image_bytes: int = MAX_IMAGE_BYTES


class _Feed:
    """The pixels of the batches that have good images, for ``backend.run_batches``; every batch
    pulled (good or not) waits in ``pulled``, in order, until its output comes back."""

    def __init__(self, batches: Iterator[Batch]) -> None:
        self.batches = batches
        self.pulled: deque[Batch] = deque()
        self.waited = 0.0  # seconds spent waiting for the reader, not for the model

    def __iter__(self) -> Iterator:
        while True:
            t0 = time.perf_counter()
            batch = next(self.batches, None)
            self.waited += time.perf_counter() - t0
            if batch is None:
                return
            self.pulled.append(batch)
            if batch.good:
                yield batch.model_input


def stream_batches(batches: Iterator[Batch], backend, times: StageTimes):
    """``(batch, output)`` in order, through ``backend.run_batches`` (on CUDA the copy of the
    next batch overlaps the run of this one); ``output`` is ``None`` for a batch with no good
    image. Inference time (the wait for outputs, less the wait for the reader) goes to
    ``times``."""
    feed = _Feed(batches)
    outputs = backend.run_batches(feed)
    while True:
        t0, waited = time.perf_counter(), feed.waited
        output = next(outputs, None)
        times.inference += time.perf_counter() - t0 - (feed.waited - waited)
        while feed.pulled and not feed.pulled[0].good:
            yield feed.pulled.popleft(), None
        if output is None:
            return
        yield feed.pulled.popleft(), output


def time_views(backend, pixels: np.ndarray, plan: ViewPlan, repeats: int = 2) -> dict[str, dict]:
    """The model's cost of the plain view and of each view set, each timed on its own.

    ``pixels`` is one batch's ``(images, views, crop, crop, 3)`` crops. The plain view and then
    each set's views run through ``backend`` by themselves, back to back under the same load,
    the best of ``repeats`` runs each. ``images_per_second`` is the model's rate for that set
    alone (decode and write not counted).
    """
    images = len(pixels)
    costs = {}
    for name, rows in (("plain", (0,)), *plan.sets):
        batch = np.ascontiguousarray(pixels[:, list(rows)]).reshape(-1, *pixels.shape[-3:])
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend.run(batch)
            seconds.append(time.perf_counter() - t0)
        best = min(seconds)
        rate = images / best if best > 0 else 0.0
        costs[name] = {"views": len(rows), "inference_seconds": best, "images_per_second": rate}
    return costs


def run_local(work: Work, backend, preprocessing: Preprocessing, options: RunOptions,
              writer: Writer) -> StageTimes:  # fmt: skip
    """Compute ``work`` here: read → run → hand each finished shard to ``writer``.

    With views, the first batch's crops are kept and, once the work is done, each view set is
    timed on them by :func:`time_views`.
    """
    sample = None
    bar = Progress(work.pending, "build", options.progress)
    assembler = ShardAssembler(backend, layer_dims(writer.manifest), options.views)
    batches = iter_batches(
        work,
        preprocessing,
        options.batch_size,
        options.workers,
        options.decode,
        pool=options.pool,
        views=options.views,
        max_bytes=options.max_image_bytes,
    )
    try:
        for batch, output in stream_batches(batches, backend, assembler.times):
            if sample is None and options.views is not None and batch.good:
                sample = batch.pixels.copy()  # the reader reuses its buffer
            rows = assembler.add(batch, output)
            bar.update(len(batch.decoded))
            if rows is not None:
                writer.put(batch.shard, rows)
    finally:
        bar.close()
    if sample is not None:
        assembler.times.view_costs = time_views(backend, sample, options.views)
    return assembler.times


def extract_features(
    paths: list[Path],
    model_path: Path,
    layers: tuple[str, ...],
    provider: str = "cpu",
    batch_size: int = 16,
    preprocessing: Preprocessing | None = None,
    decode: str = "exact",
) -> tuple[dict[str, np.ndarray], list[Path], list[tuple[Path, str]]]:
    """Features of images outside any store (for ``classify``): (features, good paths, errors).

    ``layers`` may name view layers (``pooled@flip``), computed as a build computes them.
    """
    from fstore.runtime.metadata import read_model_info
    from fstore.runtime.session import OrtBackend

    if preprocessing is None:
        preprocessing = read_model_info(model_path).preprocessing
    outputs = tuple(dict.fromkeys(name.partition(SEPARATOR)[0] for name in layers))
    views = split_layers(layers)[1]
    plan = plan_views(views, preprocessing) if views else None
    backend = OrtBackend.open(model_path, provider, outputs=outputs, preprocessing=preprocessing)
    items = [ImageItem(str(p), p) for p in paths]
    if not items:
        return {layer: np.zeros((0, 0), np.float32) for layer in layers}, [], []
    assembler = ShardAssembler(backend, {layer: 0 for layer in view_layers(outputs, views)}, plan)
    work = Work([("extract", items)], 0, len(items))
    rows = None
    batches = iter_batches(work, preprocessing, batch_size, decode=decode, views=plan)
    for batch, output in stream_batches(batches, backend, assembler.times):
        rows = assembler.add(batch, output) or rows
    assert rows is not None
    errors = [(Path(e["key"]), e["reason"]) for e in rows.errors if not e["stored"]]
    features = {layer: rows.features[layer] for layer in layers}
    return features, [Path(k) for k in rows.keys], errors
