"""Which ONNX Runtime execution providers fstore uses, and how each is configured.

* ``cpu``: the CPU provider, one intra-op pool over the usable cores.
* ``cuda``: the CUDA provider with cuDNN's exhaustive algorithm search and ``prefer_nhwc``,
  both faster for convolutions in fp32 and fp16 (docs/gpu.md has the figures).
  TensorRT is never put in front of it: an onnxruntime-gpu wheel lists TensorRT as available
  whether or not its libraries are installed, and a session that lists it then prints an
  "EP Error" banner and falls back.
* ``tensorrt``: opt-in. TensorRT in fp16 with its engines cached under fstore's cache, CUDA
  behind it for what TensorRT does not take. Offered only when the TensorRT libraries load
  (:func:`tensorrt_libraries_load`); otherwise a one-line :class:`ProviderError`.
* ``auto``: ``cuda`` when ONNX Runtime has it, else ``cpu``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

from fstore.errors import ProviderError
from fstore.runtime.cache import cache_dir

logger = logging.getLogger(__name__)

PROVIDERS = ("cpu", "cuda", "tensorrt", "auto")
ORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
#: The libraries ONNX Runtime's TensorRT provider needs, each by its possible sonames.
TENSORRT_LIBRARIES = (
    ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"),
    ("libnvinfer_plugin.so.10", "libnvinfer_plugin.so.8", "libnvinfer_plugin.so"),
    ("libnvonnxparser.so.10", "libnvonnxparser.so.8", "libnvonnxparser.so"),
)
#: Options of the CUDA provider (values as strings, as ONNX Runtime takes them).
CUDA_OPTIONS = {
    "cudnn_conv_algo_search": "EXHAUSTIVE",
    "prefer_nhwc": "1",
    "do_copy_in_default_stream": "1",
}


def available_providers() -> list[str]:
    """What ONNX Runtime says it has (TensorRT included even when its libraries are missing)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _loads(names: tuple[str, ...]) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


@functools.cache
def tensorrt_libraries_load() -> bool:
    """Whether TensorRT's libraries can actually be loaded in this process."""
    return all(_loads(names) for names in TENSORRT_LIBRARIES)


def has_provider(provider: str) -> bool:
    """Whether ``cpu``/``cuda``/``tensorrt`` can really run here."""
    if ORT_NAMES[provider] not in available_providers():
        return False
    return provider != "tensorrt" or tensorrt_libraries_load()


def resolve_provider(provider: str) -> str:
    """``cpu``/``cuda``/``tensorrt``/``auto`` → the provider to use; one-line errors otherwise."""
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")
    if provider == "auto":
        return "cuda" if has_provider("cuda") else "cpu"
    if provider == "cuda" and not has_provider("cuda"):
        raise ProviderError(
            "CUDA was asked for but ONNX Runtime has no CUDAExecutionProvider here "
            "(install onnxruntime-gpu on a machine with an NVIDIA GPU, or use --provider cpu)"
        )
    if provider == "tensorrt" and not has_provider("tensorrt"):
        raise ProviderError(
            "TensorRT was asked for but its libraries (libnvinfer, libnvinfer_plugin, "
            "libnvonnxparser) do not load here, or ONNX Runtime lacks its TensorRT provider; "
            "install TensorRT for onnxruntime-gpu, or use --provider cuda"
        )
    return provider


def tensorrt_options() -> dict[str, str]:
    """TensorRT in fp16; its engines (one per model and shape) cached under fstore's cache."""
    folder = cache_dir() / "tensorrt"
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "trt_fp16_enable": "1",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(folder),
    }


def provider_list(provider: str) -> list:
    """The ``providers`` argument of ``InferenceSession`` for a resolved provider."""
    cuda = (ORT_NAMES["cuda"], dict(CUDA_OPTIONS))
    if provider == "cuda":
        return [cuda, ORT_NAMES["cpu"]]
    if provider == "tensorrt":
        return [(ORT_NAMES["tensorrt"], tensorrt_options()), cuda, ORT_NAMES["cpu"]]
    return [ORT_NAMES["cpu"]]


def session_options(threads: int | None = None):  # -> ort.SessionOptions
    """Options for batch throughput: all graph optimisations, one intra-op pool over the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.enable_mem_pattern = True
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 3
    # Idle intra-op threads sleep instead of spinning: spinning takes the cores the decode
    # threads need, and a real model's ops are long enough not to notice (docs/performance.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
