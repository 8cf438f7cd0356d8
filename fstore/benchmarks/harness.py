"""The benchmark: eager PyTorch against fstore's ONNX Runtime sessions, timed in one run.

Two views, each timing every system in the same process, interleaved:

* **model only**: the same in-memory float32 batches through each backend's ``run(batch)``.
  Each system is loaded and warmed up at every batch size first (its peak memory is measured
  then: weights plus working memory at the largest batch). Then, per batch size, ``repeats``
  rounds; in each round every system (in an order rotated from round to round) runs enough
  batches to cover at least ``min_images`` images, and the time per batch is recorded.
* **end to end**: images on disk → features in a store. fstore's side is the real
  :func:`fstore.featurestore.build.build` into a fresh temporary store; the eager side is a
  ``DataLoader`` (``workers`` processes, as many as fstore's decoding threads) feeding the eager
  model and writing the same features to HDF5 (:func:`fstore.benchmarks.eager.eager_store`).
  Both include loading their model from a file on disk. The files are read once beforehand so
  that no system pays for the first read from disk.

Peak memory is measured apart from the timings, each system in a fresh process (so that
the systems sharing the timing process do not blur each other's numbers): the growth of its
resident memory while it imports its library, loads its model and runs one batch of every
size (model view), or while it runs end to end on the warm-up images (one batch or more),
``DataLoader`` workers included.

Statistics are medians with minimum and maximum over the rounds. Ratios divide a system's
median images/s by eager fp32's median in the same view at the same batch size, from the
same run. The fraction of peak divides the operations a system performs (2 x multiply-adds of
VGG16 up to the layer, per image) by the measured GEMM peak of the arithmetic it runs in.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from fstore.errors import FstoreError
from fstore.export.layers import LAYERS, get_layer
from fstore.export.precision import DEFAULT_CALIBRATION_COUNT, PRECISIONS, compare_features
from fstore.export.weights import WeightsSource
from fstore.images.preprocess import Preprocessing

VIEWS = ("model", "e2e")
MEMORY_MODES = ("subprocess", "off")
BASELINE = "eager-fp32"
#: Pause between two systems, so one's spinning worker threads do not slow the next.
SETTLE_SECONDS = 0.05
#: Targets of issue 5 on the 2-core CPU machine.
TARGET_FP32_E2E = 1.5
TARGET_INT8 = 4.0
TARGET_COSINE = 0.99
TARGET_SVM_POINTS = 1.0
_BUILD_DETAILS = (
    "images_computed",
    "errors",
    "decode_seconds",
    "inference_seconds",
    "write_seconds",
)


@dataclass(frozen=True)
class BenchConfig:
    """What ``fstore bench`` is asked to measure.

    Attributes:
        layer: the VGG16 layer every system computes (``fc7``).
        provider: ``cpu``, ``cuda`` or ``auto``.
        batch_sizes: batch sizes of the model-only view.
        precisions: fstore precisions timed; ``None``: ``fp32,int8`` on CPU, ``fp32,fp16`` on CUDA.
        images: an image folder to benchmark on; else ``synthetic`` generated pictures.
        synthetic: number of generated pictures when ``images`` is ``None``.
        limit: use only this many images of ``images`` (drawn with ``seed``).
        input_size: the network's input side (224; small values make tests fast).
        weights: VGG16 weights for every system.
        repeats: timed rounds per batch size in the model-only view.
        warmup: untimed runs per system and batch size before timing.
        min_images: images per system per round in the model-only view (default: largest batch).
        views: ``model``, ``e2e`` or both.
        e2e_repeats: timed rounds of the end-to-end view.
        e2e_batch_size: batch size of both end-to-end systems (default: largest batch size).
        workers: decoding threads of ``build`` and ``DataLoader`` worker processes.
        threads: ONNX Runtime intra-op threads and torch threads (default: usable cores).
        calibration: images to calibrate int8 on (default: ``images``; generated pictures if none).
        calibration_count: calibration images.
        fidelity_images: a labelled folder to measure the SVM accuracy change of each precision.
        fidelity_per_class: at most this many images per class (and split) of that folder.
        gemm_size: side of the square matrices of the GEMM peak.
        peak_seconds: time spent measuring each GEMM peak.
        memory: ``subprocess`` (measure each system's peak memory in a fresh process) or ``off``.
        seed: seed of image choices and generated pictures.
    """

    layer: str = "fc7"
    provider: str = "auto"
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    precisions: tuple[str, ...] | None = None
    images: Path | None = None
    synthetic: int = 64
    limit: int | None = None
    input_size: int = 224
    weights: WeightsSource = field(default_factory=lambda: WeightsSource("imagenet"))
    repeats: int = 5
    warmup: int = 2
    min_images: int | None = None
    views: tuple[str, ...] = VIEWS
    e2e_repeats: int = 3
    e2e_batch_size: int | None = None
    workers: int = 2
    threads: int | None = None
    calibration: Path | None = None
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    fidelity_images: Path | None = None
    fidelity_per_class: int | None = None
    gemm_size: int = 2048
    peak_seconds: float = 1.0
    memory: str = "subprocess"
    seed: int = 0

    def check(self) -> None:
        """Raise an ``FstoreError`` naming the first bad setting."""
        get_layer(self.layer)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise FstoreError("--batch-sizes needs positive sizes, e.g. 1,8,32")
        for p in self.precisions or ():
            if p not in PRECISIONS:
                raise FstoreError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        bad = [v for v in self.views if v not in VIEWS]
        if bad or not self.views:
            raise FstoreError(f"unknown view {bad[0] if bad else ''!r}; choose from model, e2e")
        if self.repeats < 1 or self.e2e_repeats < 1 or self.warmup < 0:
            raise FstoreError("--repeats must be at least 1 and --warmup at least 0")
        if self.memory not in MEMORY_MODES:
            raise FstoreError(
                f"unknown memory mode {self.memory!r}; choose from {', '.join(MEMORY_MODES)}"
            )
        if self.input_size < 32:
            raise FstoreError(
                f"--input-size must be at least 32 (VGG16 halves it 5 times), not {self.input_size}"
            )


@dataclass(frozen=True)
class System:
    """One thing timed: ``engine`` ``eager`` or ``ort`` at a ``precision``.

    ``arithmetic`` names the GEMM peak its work is compared with.
    """

    id: str
    label: str
    engine: str
    precision: str
    arithmetic: str


@dataclass(frozen=True)
class BackendSpec:
    """How to load one system's backend; picklable, so a fresh process can load it too.

    ``source`` is the ONNX model (``ort``) or the truncated model's state_dict (``eager``);
    ``variant`` is the eager variant (``fp32`` or ``best``), ignored for ``ort``.
    """

    engine: str
    source: Path
    layers: tuple[str, ...]
    provider: str
    variant: str = "fp32"
    threads: int | None = None

    def load(self) -> Any:
        """The backend: ``OrtBackend`` or ``EagerBackend``, both with ``run(batch) -> dict``."""
        if self.engine == "ort":
            from fstore.featurestore.runtime import OrtBackend

            return OrtBackend.load(
                self.source, self.provider, outputs=self.layers, threads=self.threads
            )
        import torch

        from fstore.benchmarks.eager import EagerBackend

        if self.threads:
            torch.set_num_threads(self.threads)
        return EagerBackend.from_state_dict(self.source, self.layers, self.provider, self.variant)


@dataclass(frozen=True)
class EndToEndSpec:
    """One system's path from image files to a feature file; picklable like :class:`BackendSpec`.

    ``ort`` runs :func:`fstore.featurestore.build.build` with the model ``backend.source``;
    ``eager`` runs :func:`fstore.benchmarks.eager.eager_store`.
    """

    backend: BackendSpec
    preprocessing: Preprocessing
    batch_size: int
    workers: int
    start_method: str | None = None

    def run(self, out: Path, images: Any) -> dict:
        """Write the features of ``images`` (an ``ImageSet``) to ``out``; returns stage times."""
        b = self.backend
        if b.engine == "ort":
            from fstore.api import BuildConfig, build

            report = build(
                BuildConfig(
                    store=out,
                    images=images.root,
                    layers=b.layers,
                    model=b.source,
                    provider=b.provider,
                    batch_size=self.batch_size,
                    workers=self.workers,
                    threads=b.threads,
                ),
                progress=False,
            )
            return {k: v for k, v in report.to_dict().items() if k in _BUILD_DETAILS}
        import torch

        from fstore.benchmarks.eager import eager_store

        if b.threads:
            torch.set_num_threads(b.threads)
        keys = [p.relative_to(images.root).as_posix() for p in images.paths]
        report = eager_store(
            list(images.paths),
            keys,
            out,
            b.source,
            b.layers,
            self.preprocessing,
            device=b.provider,
            variant=b.variant,
            batch_size=self.batch_size,
            workers=self.workers,
            start_method=self.start_method,
        )
        return asdict(report)


def _load_and_run(spec: BackendSpec, inputs: Path, batch_sizes: tuple[int, ...]) -> None:
    """Memory probe of the model view: load, then one batch of every size."""
    batch = np.load(inputs)
    backend = spec.load()
    for size in batch_sizes:
        backend.run(batch[:size])


def _end_to_end_once(spec: EndToEndSpec, out: Path, images: Any) -> None:
    """Memory probe of the end-to-end view."""
    spec.run(out, images)


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of repeated measurements."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(float(median(values)), float(min(values)), float(max(values)))


@dataclass
class Row:
    """One system in one view at one batch size.

    Attributes:
        view: ``model`` or ``e2e``.
        system, label: the system's id and description.
        batch_size: images per batch.
        images: images per timed round.
        batch_seconds: per round, seconds per batch (model) or of the whole run (e2e).
        images_per_s, latency_ms: per-round throughput and time per batch, as spreads.
        ratio: median images/s over eager fp32's in the same view and batch size.
        peak_mib: peak resident memory attributable to the system (see the module notes).
        gpu_peak_mib: device memory on CUDA.
        fraction_of_peak: share of the measured GEMM peak (of ``peak_kind``) reached.
        details: what else was measured (load time, time per stage...).
    """

    view: str
    system: str
    label: str
    batch_size: int
    images: int
    batch_seconds: list[float]
    images_per_s: Spread
    latency_ms: Spread
    ratio: float | None = None
    peak_mib: float | None = None
    gpu_peak_mib: float | None = None
    fraction_of_peak: float | None = None
    peak_kind: str | None = None
    details: dict = field(default_factory=dict)


@dataclass
class BenchResult:
    """Everything one benchmark run measured; :mod:`fstore.benchmarks.report` writes it."""

    started: str
    seconds: float
    config: dict
    machine: dict
    provider: str
    layer: str
    input_size: int
    macs_per_image: int
    peaks: dict[str, dict]
    systems: list[System]
    images: dict
    models: dict[str, str]
    model_rows: list[Row] = field(default_factory=list)
    e2e_rows: list[Row] = field(default_factory=list)
    fidelity: dict = field(default_factory=dict)
    targets: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def flops_per_image(self) -> float:
        return 2.0 * self.macs_per_image

    def rows(self, view: str) -> list[Row]:
        return self.model_rows if view == "model" else self.e2e_rows

    def to_dict(self) -> dict:
        data = asdict(self)
        data["flops_per_image"] = self.flops_per_image
        return data


# --------------------------------------------------------------------------- helpers


def macs_up_to(layer: str, input_size: int) -> int:
    """Multiply-adds of VGG16 from the input up to ``layer`` for one image."""
    deepest = get_layer(layer).index
    return sum(lay.macs(input_size) for lay in LAYERS[: deepest + 1])


def preprocessing_for(input_size: int) -> Preprocessing:
    """The standard preprocessing scaled to ``input_size`` (224 → resize 256, crop 224)."""
    return Preprocessing(resize=round(input_size * 256 / 224), crop=input_size)


def default_precisions(provider: str) -> tuple[str, ...]:
    return ("fp32", "fp16") if provider == "cuda" else ("fp32", "int8")


def make_systems(provider: str, precisions: tuple[str, ...]) -> list[System]:
    """Eager fp32 (the baseline), the best eager variant, then fstore at each precision."""
    from fstore.benchmarks.eager import best_variant_description, best_variant_dtype

    best = best_variant_dtype(provider)
    systems = [
        System(BASELINE, "eager PyTorch fp32 NCHW", "eager", "fp32", "fp32"),
        System(
            "eager-best", f"eager PyTorch {best_variant_description(provider)}", "eager", best, best
        ),
    ]
    for p in precisions:
        arithmetic = "fp32" if (p == "fp16" and provider == "cpu") else p
        systems.append(System(f"ort-{p}", f"fstore ONNX Runtime {p}", "ort", p, arithmetic))
    return systems


def add_ratios(rows: list[Row]) -> None:
    """Set each row's ``ratio`` against the eager fp32 row of the same view and batch size."""
    base = {(r.view, r.batch_size): r.images_per_s.median for r in rows if r.system == BASELINE}
    for row in rows:
        ref = base.get((row.view, row.batch_size))
        row.ratio = row.images_per_s.median / ref if ref else None


def add_fractions(
    rows: list[Row], systems: list[System], peaks: dict[str, dict], flops_per_image: float
) -> None:
    """Set each row's share of the measured GEMM peak of its arithmetic."""
    by_id = {s.id: s for s in systems}
    for row in rows:
        kind = by_id[row.system].arithmetic
        peak = peaks.get(kind)
        row.peak_kind = kind if peak else None
        if peak and peak["gflops"] > 0:
            work = row.images_per_s.median * flops_per_image
            row.fraction_of_peak = work / (peak["gflops"] * 1e9)


def _row(view: str, system: System, batch_size: int, images: int, seconds: list[float]) -> Row:
    """A row from per-round seconds: per batch (model view) or per run (end to end)."""
    batches = 1 if view == "model" else max(1, math.ceil(images / batch_size))
    per_image = batch_size if view == "model" else images
    ips = [per_image / s for s in seconds]
    latency = [1000.0 * s / batches for s in seconds]
    return Row(
        view,
        system.id,
        system.label,
        batch_size,
        images,
        list(seconds),
        Spread.of(ips),
        Spread.of(latency),
    )


def _rotated(items: list, k: int) -> list:
    k %= max(1, len(items))
    return items[k:] + items[:k]


# --------------------------------------------------------------------------- models


def _models(
    config: BenchConfig,
    precisions: tuple[str, ...],
    prep: Preprocessing,
    calibration: Path | None,
    log: Callable[[str], None],
) -> dict[str, Path]:
    """The ONNX model of each precision: exported (or cached) fp32, then its variants."""
    from fstore.export.onnx_export import export
    from fstore.export.precision import export_variant

    base = export((config.layer,), config.weights, preprocessing=prep, log=log)
    models = {"fp32": base.path}
    for p in precisions:
        if p != "fp32":
            models[p] = export_variant(
                base,
                p,
                calibration=calibration,
                calibration_count=config.calibration_count,
                log=log,
            ).path
    return models


# --------------------------------------------------------------------------- model view


def _sync_of(backend: Any) -> Callable[[], None]:
    return getattr(backend, "synchronize", lambda: None)


def time_batches(backend: Any, batch: np.ndarray, iterations: int) -> float:
    """Seconds to run ``batch`` ``iterations`` times, GPU work included (synchronised)."""
    sync = _sync_of(backend)
    start = time.perf_counter()
    for _ in range(iterations):
        backend.run(batch)
    sync()
    return time.perf_counter() - start


def model_view(
    systems: list[System],
    loaders: dict[str, Callable[[], Any]],
    inputs: np.ndarray,
    batch_sizes: tuple[int, ...],
    repeats: int,
    warmup: int,
    min_images: int,
    log: Callable[[str], None] = lambda _: None,
    settle: float = SETTLE_SECONDS,
) -> tuple[list[Row], dict]:
    """Time every system on the same in-memory batches; returns rows and features to compare.

    ``loaders`` make each system's backend (anything with ``run(batch) -> dict``). Every
    system is loaded and warmed up at every batch size before any timing. The features
    returned are each system's outputs on the largest batch, for fidelity.
    """
    backends: dict[str, Any] = {}
    load_seconds: dict[str, float] = {}
    features: dict[str, dict[str, np.ndarray]] = {}
    largest = max(batch_sizes)
    for system in systems:
        log(f"model view: loading and warming up {system.id}")
        start = time.perf_counter()
        backend = loaders[system.id]()
        load_seconds[system.id] = time.perf_counter() - start
        for size in batch_sizes:
            for _ in range(max(1, warmup)):
                out = backend.run(inputs[:size])
            _sync_of(backend)()
            if size == largest:
                features[system.id] = out
        backends[system.id] = backend

    rows = []
    for size in batch_sizes:
        iterations = max(1, math.ceil(min_images / size))
        batch = np.ascontiguousarray(inputs[:size])
        seconds: dict[str, list[float]] = {s.id: [] for s in systems}
        for r in range(repeats):
            for system in _rotated(systems, r):
                time.sleep(settle)
                seconds[system.id].append(
                    time_batches(backends[system.id], batch, iterations) / iterations
                )
        for system in systems:
            row = _row("model", system, size, size * iterations, seconds[system.id])
            row.details = {"iterations": iterations, "load_seconds": load_seconds[system.id]}
            rows.append(row)
        log(
            f"model view: batch {size}: "
            + ", ".join(f"{r.system} {r.images_per_s.median:.1f}" for r in rows[-len(systems) :])
            + " images/s"
        )
    return rows, features


# --------------------------------------------------------------------------- end to end


def e2e_view(
    systems: list[System],
    runners: dict[str, Callable[[Path, Any], dict]],
    image_set: Any,
    batch_size: int,
    repeats: int,
    workdir: Path,
    warm_set: Any | None = None,
    log: Callable[[str], None] = lambda _: None,
    settle: float = SETTLE_SECONDS,
) -> tuple[list[Row], dict]:
    """Time each system's whole path from image files to a feature file, ``repeats`` rounds.

    ``runners[id](out, image_set)`` writes the features of ``image_set``'s images to ``out`` (a
    store or an HDF5 file) and returns details (time per stage...). Each system first runs
    once, untimed, on ``warm_set`` (if given). Returns rows and, per system, the output of its
    first timed round.
    """
    if warm_set is not None:
        for system in systems:  # first calls: imports, worker start-up, kernel choices
            log(f"end to end: warming up {system.id} on {warm_set.count} images")
            runners[system.id](workdir / f"warm-{system.id}.h5", warm_set)
    seconds: dict[str, list[float]] = {s.id: [] for s in systems}
    details: dict[str, list[dict]] = {s.id: [] for s in systems}
    first: dict[str, Path] = {}
    for r in range(repeats):
        for system in _rotated(systems, r):
            out = workdir / f"{system.id}-{r}.h5"
            time.sleep(settle)
            start = time.perf_counter()
            info = runners[system.id](out, image_set)
            elapsed = time.perf_counter() - start
            seconds[system.id].append(elapsed)
            details[system.id].append(info)
            if r == 0:
                first[system.id] = out
            log(
                f"end to end: {system.id} round {r + 1}/{repeats}: {elapsed:.2f} s "
                f"({image_set.count / elapsed:.1f} images/s)"
            )
    rows = []
    for system in systems:
        row = _row("e2e", system, batch_size, image_set.count, seconds[system.id])
        stages = details[system.id]
        row.details = {
            k: float(median([d[k] for d in stages]))
            for k in stages[0]
            if isinstance(stages[0][k], (int, float))
        }
        rows.append(row)
    return rows, first


def _agreement(first: dict[str, Path], layer: str) -> dict:
    """Eager fp32's features against fstore fp32's, image by image (same keys)."""
    from fstore.benchmarks.eager import read_eager_store
    from fstore.featurestore.store import load_features

    if BASELINE not in first or "ort-fp32" not in first:
        return {}
    keys, feats = read_eager_store(first[BASELINE])
    fs = load_features(first["ort-fp32"], layer)
    where = {k: i for i, k in enumerate(fs.keys)}
    position = {k: i for i, k in enumerate(keys)}
    common = [k for k in keys if k in where]
    if not common:
        return {"images": 0}
    eager = feats[layer][[position[k] for k in common]]
    ours = fs.X[[where[k] for k in common]]
    row = compare_features({layer: eager}, {layer: ours})[layer]
    row["eager_images"], row["fstore_images"] = len(keys), len(fs.keys)
    return row


def measure_memory(
    systems: list[System],
    specs: dict[str, BackendSpec],
    e2e_specs: dict[str, EndToEndSpec] | None,
    inputs: Path,
    batch_sizes: tuple[int, ...],
    warm_set: Any,
    workdir: Path,
    cuda: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, dict]]:
    """Peak memory of each system, each in a fresh process: ``{view: {system: use}}``."""
    from fstore.benchmarks.machine import measure_in_subprocess

    found: dict[str, dict[str, dict]] = {"model": {}, "e2e": {}}
    for system in systems:
        log(f"memory: {system.id}")
        found["model"][system.id] = measure_in_subprocess(
            _load_and_run, specs[system.id], inputs, batch_sizes, cuda=cuda
        )
        if e2e_specs is not None:
            found["e2e"][system.id] = measure_in_subprocess(
                _end_to_end_once,
                e2e_specs[system.id],
                workdir / f"memory-{system.id}.h5",
                warm_set,
                cuda=cuda,
            )
    return found


def _apply_memory(rows: list[Row], memory: dict[str, dict]) -> None:
    for row in rows:
        use = memory.get(row.system)
        if use:
            row.peak_mib = use["extra_mib"]
            row.gpu_peak_mib = use.get("gpu_peak_mib")


# --------------------------------------------------------------------------- the run


def run_bench(
    config: BenchConfig, log: Callable[[str], None] = lambda _: None, workdir: Path | None = None
) -> BenchResult:
    """Run every view of the benchmark described by ``config``; returns what was measured.

    Temporary files (generated images, stores, the eager weights) live in a folder under
    ``workdir`` (the system's temporary folder by default), removed at the end.
    """
    from fstore.export.weights import require_torch

    config.check()
    require_torch()  # the eager side is half of the benchmark
    import torch

    from fstore.benchmarks import inputs as inp
    from fstore.benchmarks.eager import EagerBackend, save_state_dict
    from fstore.benchmarks.machine import gemm_peaks, machine_info, usable_cores
    from fstore.export.precision import read_fidelity
    from fstore.export.weights import load_vgg16
    from fstore.featurestore.runtime import resolve_provider

    started = time.perf_counter()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    provider = resolve_provider(config.provider)
    cuda = provider == "cuda"
    precisions = tuple(config.precisions or default_precisions(provider))
    threads = config.threads or usable_cores()
    torch.set_num_threads(threads)
    prep = preprocessing_for(config.input_size)
    layers = (config.layer,)
    largest = max(config.batch_sizes)
    e2e_batch = config.e2e_batch_size or largest
    systems = make_systems(provider, precisions)

    machine = machine_info()
    notes: list[str] = []
    load = machine.get("load_average") or []
    if load and load[0] > 0.5 * machine["usable_cores"]:
        notes.append(
            f"The machine was busy when the run started (load average {load[0]:.1f} "
            f"on {machine['usable_cores']} cores): timings are pessimistic and noisy."
        )
    peaks = {
        k: asdict(v)
        for k, v in gemm_peaks(
            provider, config.gemm_size, config.peak_seconds, threads, log=log
        ).items()
    }

    with tempfile.TemporaryDirectory(prefix="fstore-bench-", dir=workdir) as tmp:
        work = Path(tmp)
        image_set = inp.prepare_images(
            work, prep, config.images, config.synthetic, config.limit, config.seed
        )
        calibration = config.calibration or config.images
        models = _models(config, precisions, prep, calibration, log)
        log(f"loading eager VGG16 ({config.weights.origin})")
        full, _ = load_vgg16(config.weights)
        state = save_state_dict(
            EagerBackend.from_model(full, layers, "cpu"), work / "eager-state.pt"
        )
        del full  # each eager system loads its own copy from the file, as ONNX Runtime does
        specs = {
            BASELINE: BackendSpec("eager", state, layers, provider, "fp32", threads),
            "eager-best": BackendSpec("eager", state, layers, provider, "best", threads),
        }
        specs.update(
            {
                f"ort-{p}": BackendSpec("ort", models[p], layers, provider, p, threads)
                for p in precisions
            }
        )
        # DataLoader workers start as they would in this process, also in a measuring one
        start_method = multiprocessing.get_start_method()
        e2e_specs = {
            sid: EndToEndSpec(spec, prep, e2e_batch, config.workers, start_method)
            for sid, spec in specs.items()
        }
        result = BenchResult(
            started=stamp,
            seconds=0.0,
            config=_config_dict(config, precisions, threads, e2e_batch),
            machine=machine,
            provider=provider,
            layer=config.layer,
            input_size=config.input_size,
            macs_per_image=macs_up_to(config.layer, config.input_size),
            peaks=peaks,
            systems=systems,
            images={
                "source": image_set.source,
                "count": image_set.count,
                "description": image_set.describe(),
                "origin": str(image_set.origin) if image_set.origin else None,
            },
            models={p: str(path) for p, path in models.items()},
            notes=notes,
        )
        batch_inputs = inp.model_inputs(image_set, largest, prep)
        warm_set = inp.prepare_images(
            work / "warm",
            prep,
            image_set.root,
            limit=min(image_set.count, e2e_batch),
            seed=config.seed,
        )

        if "model" in config.views:
            rows, feats = model_view(
                systems,
                {sid: spec.load for sid, spec in specs.items()},
                batch_inputs,
                config.batch_sizes,
                config.repeats,
                config.warmup,
                config.min_images or largest,
                log,
            )
            result.model_rows = rows
            result.fidelity["model_view"] = {
                s.id: compare_features(feats[BASELINE], feats[s.id])[config.layer]
                for s in systems
                if s.id != BASELINE
            }
            del feats

        if "e2e" in config.views:
            inp.warm_file_cache(image_set)
            e2e_dir = work / "e2e"
            e2e_dir.mkdir()
            rows, first = e2e_view(
                systems,
                {sid: spec.run for sid, spec in e2e_specs.items()},
                image_set,
                e2e_batch,
                config.e2e_repeats,
                e2e_dir,
                warm_set,
                log,
            )
            result.e2e_rows = rows
            result.fidelity["e2e_agreement"] = _agreement(first, config.layer)

        if config.memory == "subprocess":
            np.save(work / "inputs.npy", batch_inputs)
            memory = measure_memory(
                systems,
                specs,
                e2e_specs if "e2e" in config.views else None,
                work / "inputs.npy",
                config.batch_sizes,
                warm_set,
                work,
                cuda,
                log,
            )
            _apply_memory(result.model_rows, memory["model"])
            _apply_memory(result.e2e_rows, memory["e2e"])

        result.fidelity["export"] = {
            p: read_fidelity(path) for p, path in models.items() if p != "fp32"
        }
        if config.fidelity_images is not None:
            from fstore.export.precision import accuracy_change

            result.fidelity["svm"] = {
                p: accuracy_change(
                    models["fp32"],
                    models[p],
                    config.fidelity_images,
                    prep,
                    layer=config.layer,
                    per_class=config.fidelity_per_class,
                    provider=provider,
                    seed=config.seed,
                    log=log,
                )
                for p in precisions
                if p != "fp32"
            }

    all_rows = result.model_rows + result.e2e_rows
    add_ratios(all_rows)
    add_fractions(all_rows, systems, peaks, result.flops_per_image)
    result.targets = evaluate_targets(result)
    result.notes.extend(_notes(result, precisions, config.memory))
    result.seconds = time.perf_counter() - started
    return result


def _config_dict(
    config: BenchConfig, precisions: tuple[str, ...], threads: int, e2e_batch: int
) -> dict:
    data = asdict(config)
    data.update(
        precisions=list(precisions),
        threads=threads,
        e2e_batch_size=e2e_batch,
        weights=config.weights.origin,
    )
    return json.loads(json.dumps(data, default=str))


def _notes(result: BenchResult, precisions: tuple[str, ...], memory: str) -> list[str]:
    notes = []
    if result.provider == "cpu":
        notes.append(
            "CUDA path untested in this run: no CUDA GPU (or no onnxruntime-gpu) here; "
            "run `fstore bench --provider cuda` on a GPU machine for the CUDA table."
        )
    if result.provider == "cpu" and "fp16" in precisions:
        notes.append(
            "fp16 on CPU: ONNX Runtime's CPU provider has few fp16 kernels; fp16 is meant for CUDA."
        )
    if result.provider == "cuda" and "int8" in precisions:
        notes.append(
            "int8 on CUDA: the CUDA provider runs QDQ models mostly dequantized; int8 "
            "speed on GPUs needs the TensorRT provider."
        )
    if result.images.get("source") == "synthetic":
        notes.append(
            "Images are generated pictures: speeds are representative, fidelity less so "
            "(pass --images and --calibration with real photographs)."
        )
    if memory == "subprocess":
        notes.append(
            "Peak memory: each system in a fresh process, the growth of resident "
            "memory while it imports its library, loads its model and runs one batch "
            "of each size (model view) or runs end to end on the warm-up images, "
            "DataLoader workers' private memory included."
        )
    else:
        notes.append("Peak memory not measured (memory off).")
    return notes


def evaluate_targets(result: BenchResult) -> list[dict]:
    """Issue 5's targets, each ``met``, ``not met`` or ``not measured``, with the numbers."""

    def find(view: str, system: str, batch: int | None = None) -> Row | None:
        rows = [
            r
            for r in result.rows(view)
            if r.system == system and (batch is None or r.batch_size == batch)
        ]
        return rows[-1] if rows else None

    def status(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "not met")

    targets = []
    fp32 = find("e2e", "ort-fp32")
    ratio = fp32.ratio if fp32 else None
    targets.append(
        {
            "target": f"fstore fp32 end to end >= {TARGET_FP32_E2E}x eager fp32 end to end",
            "value": ratio,
            "status": status(None if ratio is None else ratio >= TARGET_FP32_E2E),
        }
    )
    largest = max(result.config["batch_sizes"]) if result.config.get("batch_sizes") else None
    for view in ("e2e", "model"):
        row = find(view, "ort-int8", largest if view == "model" else None)
        value = row.ratio if row else None
        where = "end to end" if view == "e2e" else f"model only, batch {largest}"
        targets.append(
            {
                "target": f"fstore int8 >= {TARGET_INT8}x eager fp32 ({where})",
                "value": value,
                "status": status(None if value is None else value >= TARGET_INT8),
            }
        )
    cosine = (result.fidelity.get("model_view", {}).get("ort-int8") or {}).get("mean_cosine")
    exported = (
        (result.fidelity.get("export", {}).get("int8") or {})
        .get("layers", {})
        .get(result.layer, {})
        .get("mean_cosine")
    )
    measured = [v for v in (cosine, exported) if v is not None]
    value = min(measured) if measured else None
    targets.append(
        {
            "target": f"int8 mean cosine vs fp32 >= {TARGET_COSINE}",
            "value": value,
            "status": status(None if value is None else value >= TARGET_COSINE),
        }
    )
    svm = (result.fidelity.get("svm") or {}).get("int8")
    change = svm["change_points"] if svm else None
    targets.append(
        {
            "target": f"int8 SVM test accuracy within {TARGET_SVM_POINTS} point of fp32",
            "value": change,
            "status": status(None if change is None else abs(change) <= TARGET_SVM_POINTS),
        }
    )
    return targets
