"""ONNX Runtime sessions for throughput, on CPU or CUDA, behind one small interface.

``OrtBackend.run(batch)`` takes a float32 NCHW batch and returns the requested outputs as NumPy
arrays. On CUDA it uses IO binding: one host→device copy of the batch, the outputs left on the
device by the run and fetched once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.errors import ModelError, ProviderError

PROVIDERS = ("cpu", "cuda", "auto")
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_provider(provider: str) -> str:
    """``cpu``/``cuda``/``auto`` → ``cpu`` or ``cuda``; a one-line error when CUDA is absent."""
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")
    has_cuda = _ORT_NAMES["cuda"] in available_providers()
    if provider == "cuda" and not has_cuda:
        raise ProviderError(
            "CUDA was asked for but ONNX Runtime has no CUDAExecutionProvider here "
            "(install onnxruntime-gpu on a machine with an NVIDIA GPU, or use --provider cpu)"
        )
    if provider == "auto":
        return "cuda" if has_cuda else "cpu"
    return provider


def _tensorrt_options() -> dict:
    """TensorRT first when ONNX Runtime has it; its engines are cached beside the models."""
    from fstore.export.cache import cache_dir

    folder = cache_dir() / "tensorrt"
    folder.mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder)}


def session_options(threads: int | None = None):  # -> ort.SessionOptions
    """Options for batch throughput: all graph optimisations, one intra-op pool over the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or (os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = True
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 3
    return options


@dataclass
class OrtBackend:
    """A loaded ONNX model ready to run batches.

    Create with :meth:`load`. ``outputs`` are the output names run, in order.
    """

    session: object
    provider: str
    input_name: str
    outputs: tuple[str, ...]
    metadata: dict[str, str]

    @classmethod
    def load(
        cls,
        path: Path,
        provider: str = "cpu",
        outputs: tuple[str, ...] | None = None,
        threads: int | None = None,
    ) -> OrtBackend:
        import onnxruntime as ort

        provider = resolve_provider(provider)
        if provider == "cuda":
            providers = [
                ("CUDAExecutionProvider",
                 {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}),
                "CPUExecutionProvider",
            ]  # fmt: skip
            if "TensorrtExecutionProvider" in available_providers():
                providers.insert(0, ("TensorrtExecutionProvider", _tensorrt_options()))
        else:
            providers = ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(
                str(path), sess_options=session_options(threads), providers=providers
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
            raise ModelError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None
        names = tuple(o.name for o in session.get_outputs())
        if outputs is not None:
            missing = [o for o in outputs if o not in names]
            if missing:
                raise ModelError(
                    f"model {path} has no output {missing[0]!r}; "
                    f"its outputs are: {', '.join(names)}"
                )
            names = tuple(outputs)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"model {path} has {len(inputs)} inputs; fstore needs exactly one image input"
            )
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        return cls(session, provider, inputs[0].name, names, metadata)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one float32 NCHW batch; returns ``{output name: array}``."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.provider == "cuda":
            return self._run_cuda(batch)
        values = self.session.run(list(self.outputs), {self.input_name: batch})
        return dict(zip(self.outputs, values))

    def _run_cuda(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        binding = self.session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)  # one H2D copy
        binding.bind_ortvalue_input(self.input_name, device_input)
        for name in self.outputs:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        values = binding.copy_outputs_to_cpu()  # one D2H fetch per output
        return dict(zip(self.outputs, values))
