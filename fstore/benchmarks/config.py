"""What ``fstore bench`` is asked to measure: one frozen config, checked before anything runs.

:class:`BenchConfig`'s defaults are the quick run (a few minutes on 2 CPU cores at 224x224);
:data:`FULL` is what ``--full`` changes for the long one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fstore.errors import FstoreError
from fstore.export.calibration import DEFAULT_CALIBRATION_COUNT
from fstore.export.layers import get_layer
from fstore.runtime.metadata import PRECISIONS
from fstore.runtime.weights_source import WeightsSource

VIEWS = ("model", "e2e", "pipeline")
#: Views that run VGG16; the pipeline view runs a no-op model and never loads it.
MODEL_VIEWS = ("model", "e2e")
MEMORY_MODES = ("subprocess", "off")

#: Devices a benchmark runs every system on (eager PyTorch too, so no TensorRT).
BENCH_PROVIDERS = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class BenchConfig:
    """What ``fstore bench`` is asked to measure; the defaults make the quick run.

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
        views: any of ``model`` (model only), ``e2e`` (end to end) and ``pipeline`` (the input
            side: read, decode, batch and write around a no-op model).
        e2e_repeats: timed rounds of the end-to-end and pipeline views.
        e2e_batch_size: their batch size (default: largest batch size).
        workers: decoding threads of ``build`` and ``DataLoader`` worker processes.
        threads: ONNX Runtime intra-op threads and torch threads (default: usable cores).
        calibration: images to calibrate int8 on (default: ``images``; generated pictures if none).
        calibration_count: calibration images.
        fidelity_images: a labelled folder to measure the SVM accuracy change of each precision.
        fidelity_per_class: at most this many images per class (and split) of that folder.
        gemm_size: side of the square matrices of the GEMM peak.
        peak_seconds: time spent measuring each GEMM peak.
        remeasure_peaks: measure the GEMM peaks again even where fstore's cache has them.
        memory: ``subprocess`` (measure each system's peak memory in a fresh process) or ``off``.
        seed: seed of image choices and generated pictures.
    """

    layer: str = "fc7"
    provider: str = "auto"
    batch_sizes: tuple[int, ...] = (4,)
    precisions: tuple[str, ...] | None = None
    images: Path | None = None
    synthetic: int = 8
    limit: int | None = None
    input_size: int = 224
    weights: WeightsSource = field(default_factory=lambda: WeightsSource("imagenet"))
    repeats: int = 3
    warmup: int = 1
    min_images: int | None = None
    views: tuple[str, ...] = VIEWS
    e2e_repeats: int = 1
    e2e_batch_size: int | None = None
    workers: int = 2
    threads: int | None = None
    calibration: Path | None = None
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    fidelity_images: Path | None = None
    fidelity_per_class: int | None = None
    gemm_size: int = 2048
    peak_seconds: float = 1.0
    remeasure_peaks: bool = False
    memory: str = "off"
    seed: int = 0

    @property
    def runs_vgg16(self) -> bool:
        """Whether a view needs VGG16 (the pipeline view alone does not)."""
        return any(v in MODEL_VIEWS for v in self.views)

    @property
    def e2e_batch(self) -> int:
        return self.e2e_batch_size or max(self.batch_sizes)

    def check(self) -> None:
        """Raise an ``FstoreError`` naming the first bad setting."""
        get_layer(self.layer)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise FstoreError("--batch-sizes needs positive sizes, e.g. 1,8,32")
        for p in self.precisions or ():
            if p not in PRECISIONS:
                raise FstoreError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        bad = [v for v in self.views or () if v not in VIEWS]
        if bad or not self.views:
            shown = bad[0] if bad else ""
            raise FstoreError(f"unknown view {shown!r}; choose from {', '.join(VIEWS)}")
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

    @classmethod
    def from_options(cls, *, full: bool, weights: str, seed: int, **given) -> BenchConfig:
        """The config of ``fstore bench``'s options: the quick run's defaults, or ``full``'s,
        under the options given (``None`` is an option not given); ``weights`` as its text."""
        chosen = {k: v for k, v in given.items() if v is not None}
        return cls(**{**(FULL if full else {}), **chosen,
                      "weights": WeightsSource.parse(weights, seed), "seed": seed})  # fmt: skip


#: What ``--full`` changes: more images, batch sizes and rounds, peak memory, fresh GEMM peaks.
FULL = {
    "synthetic": 64,
    "batch_sizes": (1, 8, 32),
    "repeats": 5,
    "warmup": 2,
    "e2e_repeats": 3,
    "memory": "subprocess",
    "remeasure_peaks": True,
}
