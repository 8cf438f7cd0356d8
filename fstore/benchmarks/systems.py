"""The systems a benchmark times, and how each is built.

* VGG16 systems (model-only and end-to-end views): eager PyTorch fp32 (the baseline), the
  eager variant measured fastest on this machine (:mod:`.variants`), and fstore's ONNX Runtime
  model at each precision.
* Pipeline systems (the input side): ``fstore build`` with a no-op ONNX model, and the eager
  ``DataLoader`` (the ceiling an eager pipeline reaches) with a no-op torch model.

A :class:`BackendSpec` or :class:`EndToEndSpec` says how to make a system; both are picklable,
so a fresh process can make the same system to measure its memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fstore.benchmarks.eager import VARIANTS, LoaderOptions
from fstore.benchmarks.statistics import BASELINE, PIPELINE_BASELINE
from fstore.export.layers import LAYERS, get_layer
from fstore.images.preprocess import Preprocessing
from fstore.runtime.backend import Backend

#: Stage times of ``fstore build`` kept in the end-to-end rows.
BUILD_DETAILS = (
    "images_computed",
    "errors",
    "decode_seconds",
    "inference_seconds",
    "write_seconds",
)


@dataclass(frozen=True)
class System:
    """One thing timed: ``engine`` ``eager``, ``ort`` or ``noop`` at a ``precision``.

    ``arithmetic`` names the GEMM peak its work is compared with (``None``: no model work).
    """

    id: str
    label: str
    engine: str
    precision: str
    arithmetic: str | None


def macs_up_to(layer: str, input_size: int) -> int:
    """Multiply-adds of VGG16 from the input up to ``layer`` for one image."""
    deepest = get_layer(layer).index
    return sum(lay.macs(input_size) for lay in LAYERS[: deepest + 1])


def default_precisions(provider: str) -> tuple[str, ...]:
    return ("fp32", "fp16") if provider == "cuda" else ("fp32", "int8")


def make_systems(provider: str, precisions: tuple[str, ...], best: str) -> list[System]:
    """Eager fp32 (the baseline), the eager variant ``best``, then fstore at each precision."""
    variant = VARIANTS[best]
    label = f"eager PyTorch {variant.describe(provider)}, the fastest eager variant measured here"
    systems = [
        System(BASELINE, "eager PyTorch fp32 NCHW", "eager", "fp32", "fp32"),
        System("eager-best", label, "eager", variant.dtype, variant.dtype),
    ]
    for p in precisions:
        arithmetic = "fp32" if (p == "fp16" and provider == "cpu") else p
        systems.append(System(f"ort-{p}", f"fstore ONNX Runtime {p}", "ort", p, arithmetic))
    return systems


def pipeline_systems(workers: int) -> list[System]:
    """The input side: the eager DataLoader's ceiling (the baseline), then ``fstore build``."""
    return [
        System(
            PIPELINE_BASELINE,
            f"torchvision DataLoader, {workers} worker processes, no-op model, HDF5",
            "noop",
            "fp32",
            None,
        ),
        System(
            "build-noop",
            f"fstore build, {workers} decoding threads, no-op ONNX model on the uint8 pixels "
            "(normalisation is the model's, on the device), store",
            "ort",
            "fp32",
            None,
        ),
        System(
            "build-noop-norm",
            f"fstore build, {workers} decoding threads, no-op ONNX model after the in-graph "
            "normalisation (on these CPU cores), store",
            "ort",
            "fp32",
            None,
        ),
    ]


@dataclass(frozen=True)
class BackendSpec:
    """How to make one system's :class:`~fstore.runtime.backend.Backend`.

    ``source`` is the ONNX model (``ort``) or the truncated model's state_dict (``eager``);
    ``variant`` is the eager variant (a name of :data:`~fstore.benchmarks.eager.VARIANTS`) or,
    for ``ort``, the precision.
    """

    engine: str
    source: Path | None
    layers: tuple[str, ...]
    provider: str
    variant: str = "fp32"
    threads: int | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def create(self) -> Backend:
        """The backend, not loaded yet (whoever times it times its load too)."""
        if self.engine == "ort":
            from fstore.runtime.session import OrtBackend

            # uint8 batches straight in: the model normalises them in its graph
            return OrtBackend(
                self.source,
                self.provider,
                outputs=tuple(self.layers) or None,
                threads=self.threads,
                preprocessing=self.preprocessing,
            )
        import torch

        from fstore.benchmarks.eager import EagerBackend
        from fstore.benchmarks.pipeline import MeanPoolBackend

        if self.threads:
            torch.set_num_threads(self.threads)
        if self.engine == "noop":
            return MeanPoolBackend(self.provider, self.preprocessing)
        return EagerBackend(
            self.source,
            self.layers,
            device=self.provider,
            variant=self.variant,
            preprocessing=self.preprocessing,
        )

    def make(self) -> Backend:
        """The backend, loaded."""
        backend = self.create()
        backend.load()
        return backend


@dataclass(frozen=True)
class EndToEndSpec:
    """One system's path from image files to a feature file; picklable like :class:`BackendSpec`.

    ``ort`` runs :func:`fstore.pipeline.model.build_store` with the model ``backend.source``;
    ``eager`` and ``noop`` run :func:`fstore.benchmarks.eager.eager_store`.
    """

    backend: BackendSpec
    loader: LoaderOptions
    #: ``fstore build``'s decode mode (``None``: the build's default; ``exact`` is torchvision's)
    decode: str | None = None

    def run(self, out: Path, images: Any) -> dict:
        """Write the features of ``images`` (an ``ImageSet``) to ``out``; returns stage times."""
        if self.backend.engine == "ort":
            return self._build(out, images)
        from fstore.benchmarks.eager import eager_store

        keys = [p.relative_to(images.root).as_posix() for p in images.paths]
        backend = self.backend.create()
        return asdict(eager_store(list(images.paths), keys, out, backend, self.loader))

    def _build(self, out: Path, images: Any) -> dict:
        from fstore.pipeline.config import BuildConfig
        from fstore.pipeline.model import build_store

        b = self.backend
        report = build_store(
            BuildConfig(
                store=out,
                images=images.root,
                layers=b.layers or None,
                model=b.source,
                preprocessing=b.preprocessing,
                provider=b.provider,
                batch_size=self.loader.batch_size,
                workers=self.loader.workers,
                threads=b.threads,
                decode=self.decode,
            ),
            progress=False,
        )
        return {k: v for k, v in report.to_dict().items() if k in BUILD_DETAILS}
