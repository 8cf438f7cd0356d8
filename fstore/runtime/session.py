"""ONNX Runtime sessions for throughput, on CPU, CUDA or TensorRT: the ORT :class:`Backend`.

``OrtBackend(path, provider, ...)`` names a model; ``load()`` creates the session. ``run(batch)``
takes what the reader produces, ``uint8 (N, H, W, 3)`` RGB, and returns the requested outputs
as NumPy arrays. The model normalises the pixels itself (:mod:`fstore.runtime.prefix`): fstore's
exports carry the prefix, and a float model given with its mean and std (``--model``) is wrapped
in memory at load. On CUDA, batches go through pinned buffers and IO binding, two at a time
(:mod:`fstore.runtime.cuda`); :meth:`OrtBackend.run_batches` keeps that pipeline full.

A float model loaded without its preprocessing (fstore does not know its normalisation) is run
as it is: it takes the float32 NCHW batches its caller normalised.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.errors import ModelError, ProviderError
from fstore.runtime.prefix import InputSpec, add_prefix
from fstore.runtime.providers import (
    ORT_NAMES,
    provider_list,
    resolve_provider,
    session_options,
)

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Catch what native code writes to fds 1 and 2 (ORT's provider banners) for the log."""
    caught: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            yield caught
        finally:
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            sink.seek(0)
            caught.append(sink.read().decode(errors="replace"))


#: ONNX Runtime 1.32's NCHWc layout pass crashes the process (a segmentation fault) on some
#: float16 graphs on the CPU (a Vision Transformer's patch convolution); fp16 is for CUDA, and
#: on the CPU it runs without that pass.
_FP16_CPU_DISABLED = ("NchwcTransformer",)


def _disabled_optimizers(model: str | bytes, provider: str) -> list[str]:
    from fstore.runtime.metadata import read_props

    if provider != "cpu" or not isinstance(model, str):
        return []
    try:
        fp16 = read_props(Path(model)).get("fstore.precision") == "fp16"
    except ModelError:
        return []  # ONNX Runtime gives the reason when it loads the file
    return list(_FP16_CPU_DISABLED) if fp16 else []


def _create_session(model: str | bytes, provider: str, threads: int | None, label: str):
    import onnxruntime as ort

    try:
        quiet = captured_output() if provider != "cpu" else contextlib.nullcontext([])
        with quiet as caught:
            session = ort.InferenceSession(
                model,
                sess_options=session_options(threads),
                providers=provider_list(provider),
                enable_fallback=0,  # fail instead of printing a banner and falling back
                disabled_optimizers=_disabled_optimizers(model, provider),
            )
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
        raise ModelError(f"cannot load ONNX model {label}: {str(exc).splitlines()[0]}") from None
    finally:
        for text in caught if provider != "cpu" else []:
            if text.strip():
                logger.debug("ONNX Runtime said while loading %s: %s", label, text.strip())
    active = session.get_providers()[0]
    if active != ORT_NAMES[provider]:  # ORT skipped a provider it could not create
        raise ProviderError(
            f"ONNX Runtime could not start {ORT_NAMES[provider]} for {label} (it would run on "
            f"{active}); check the GPU driver and CUDA/cuDNN libraries, or use --provider cpu"
        )
    return session


@dataclass
class OrtBackend:
    """A model run by ONNX Runtime; implements :class:`fstore.runtime.backend.Backend`.

    Attributes:
        path: the ONNX file.
        provider: ``cpu``, ``cuda``, ``tensorrt`` or ``auto`` (resolved by :meth:`load`).
        outputs: output names to run, in order; all of the model's when ``None``.
        threads: intra-op threads on the CPU (all usable cores when ``None``).
        preprocessing: anything with ``mean`` and ``std`` (an fstore ``Preprocessing``): how to
            wrap a model that takes float input; ignored for a model that takes uint8 already.
        batch_size: the fixed device batch on CUDA (the first batch's size when ``None``).
    """

    path: Path
    provider: str = "cpu"
    outputs: tuple[str, ...] | None = None
    threads: int | None = None
    preprocessing: object | None = None
    batch_size: int | None = None
    session: object = field(default=None, init=False, repr=False)
    input_name: str = field(default="", init=False)
    metadata: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    input_spec: InputSpec | None = field(default=None, init=False)
    _runner: object = field(default=None, init=False, repr=False)

    @classmethod
    def open(
        cls,
        path: Path,
        provider: str = "cpu",
        outputs: tuple[str, ...] | None = None,
        threads: int | None = None,
        **options,
    ) -> OrtBackend:
        """Create and load in one call."""
        backend = cls(Path(path), provider, tuple(outputs) if outputs else None, threads, **options)
        backend.load()
        return backend

    # ------------------------------------------------------------------ Backend

    def load(self) -> None:
        """Create the ONNX Runtime session (once)."""
        if self.session is not None:
            return
        self.provider = resolve_provider(self.provider)
        session = _create_session(str(self.path), self.provider, self.threads, str(self.path))
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        if InputSpec.from_props(metadata) is None and self.preprocessing is not None:
            session = self._wrapped_session()
            metadata = dict(session.get_modelmeta().custom_metadata_map)
        self.session, self.metadata = session, metadata
        self.input_spec = InputSpec.from_props(metadata)
        self.input_name = self._single_input()
        self.outputs = self._checked_outputs()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch (uint8 NHWC RGB); returns ``{output name: array}`` on the host."""
        self.load()
        return next(iter(self.run_batches([batch])))

    def run_batches(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Outputs of each batch in order; on CUDA the copy of one overlaps the run of the last."""
        self.load()
        fed = (self._input(batch) for batch in batches)
        if self.provider == "cpu":
            for x in fed:
                values = self.session.run(list(self.outputs), {self.input_name: x})
                yield dict(zip(self.outputs, values))
            return
        yield from self._run_on_device(fed)

    def synchronize(self) -> None:
        """Nothing to wait for: every output is on the host when ``run`` returns."""

    def describe(self) -> dict[str, str]:
        return {
            "name": f"ort-{self.precision}",
            "provider": self.provider,
            "precision": self.precision,
            "input": "uint8 NHWC RGB" if self.input_spec else "float32 NCHW",
            "model": str(self.path),
        }

    @property
    def precision(self) -> str:
        return self.metadata.get("fstore.precision", "fp32")

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # ------------------------------------------------------------------ helpers

    def _wrapped_session(self):
        """A float model with the uint8 prefix added in memory, from ``preprocessing``."""
        import onnx

        model = onnx.load(str(self.path))
        add_prefix(model, self.preprocessing.mean, self.preprocessing.std)
        logger.info("wrapping %s with a uint8 input and its normalisation", self.path)
        label = f"{self.path} (with fstore's uint8 input)"
        return _create_session(model.SerializeToString(), self.provider, self.threads, label)

    def _single_input(self) -> str:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"model {self.path} has {len(inputs)} inputs; fstore needs exactly one image input"
            )
        return inputs[0].name

    def _checked_outputs(self) -> tuple[str, ...]:
        names = tuple(o.name for o in self.session.get_outputs())
        if self.outputs is None:
            return names
        missing = [o for o in self.outputs if o not in names]
        if missing:
            raise ModelError(
                f"model {self.path} has no output {missing[0]!r}; "
                f"its outputs are: {', '.join(names)}"
            )
        return tuple(self.outputs)

    def _input(self, batch: np.ndarray) -> np.ndarray:
        """The batch as the model takes it: uint8 NHWC pixels, or float32 for a float model
        whose normalisation fstore does not know."""
        if self.input_spec is None:
            if batch.dtype == np.uint8:
                raise ModelError(
                    f"model {self.path} takes float input and fstore does not know its "
                    "normalisation: give its mean and std (--mean/--std)"
                )
            return np.ascontiguousarray(batch, dtype=np.float32)
        if batch.dtype != np.uint8:
            raise TypeError(
                f"{self.path} takes uint8 (N, H, W, 3) RGB batches, got {batch.dtype} {batch.shape}"
            )
        return np.ascontiguousarray(batch)

    def _run_on_device(self, fed: Iterator[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Batches through the double-buffered runner, in device-sized chunks, regrouped."""
        first = next(fed, None)
        if first is None:
            return
        runner = self._device_runner(first)
        counts: deque[int] = deque()

        def chunks() -> Iterator[np.ndarray]:
            for x in itertools.chain([first], fed):
                if x.shape[1:] != runner.shape[1:]:
                    raise ModelError(f"batch shape {x.shape[1:]} differs from {runner.shape[1:]}")
                parts = list(_chunks(x, runner.batch_size))
                counts.append(len(parts))
                yield from parts

        done: list[dict[str, np.ndarray]] = []
        for out in runner.stream(chunks()):
            done.append(out)
            if len(done) == counts[0]:
                counts.popleft()
                yield {k: np.concatenate([d[k] for d in done]) for k in self.outputs}
                done = []

    def _device_runner(self, x: np.ndarray):
        from fstore.runtime.cuda import DoubleBufferedRunner

        shape = (max(self.batch_size or len(x), 1),) + x.shape[1:]
        if self._runner is None or self._runner.shape[1:] != shape[1:]:  # else pad or chunk
            self.close()
            self._runner = DoubleBufferedRunner(
                self.session, self.input_name, self.outputs, shape, x.dtype
            )
        return self._runner


def _chunks(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(x), size):
        yield x[start : start + size]
