"""Measured GEMM peaks, one per arithmetic the timed systems run in, cached beside the models.

A peak is *measured*, not taken from a data sheet: the best time of a square matrix product
(``n`` x ``n``, ``2 n^3`` operations) over the routes a library offers for that arithmetic:

* ``fp32``: NumPy's BLAS, ONNX Runtime's ``MatMul`` (the kernels of fstore's fp32 models),
  ``torch.mm`` and a 1x1 torch convolution (oneDNN on CPU, cuDNN on CUDA: the path eager
  VGG16's convolutions take);
* ``bf16`` and ``fp16``: ``torch.mm`` and the 1x1 convolution in that type. Both count because
  a CPU without native bf16 runs ``torch.mm`` through a slow fallback while oneDNN's
  convolutions convert to fp32 and run fast: the better of the two is the honest ceiling;
* ``int8``: ONNX Runtime's ``MatMulInteger`` with uint8 activations and the weight type of
  fstore's int8 models on this CPU (:func:`fstore.export.precision.int8_format`).

Measuring costs seconds per kind, so peaks are cached in fstore's cache folder
(``gemm-peaks.json`` beside ``models/``), keyed by the device, the CPU (or GPU), the threads,
``n`` and the library versions. A new measurement of a cached kind keeps the higher figure:
a peak is the best the machine reached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fstore.benchmarks.machine import cpu_flags, cpu_model, gpu_name, library_versions, usable_cores
from fstore.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

CACHE_FILE = "gemm-peaks.json"


@dataclass(frozen=True)
class Peak:
    """A measured GEMM peak: ``gflops`` (10^9 operations per second) reached by ``how``.

    ``measured`` is when (UTC) and ``load`` the 1-minute load average then; ``from_cache``
    says whether this run reused it.
    """

    kind: str
    gflops: float
    how: str
    n: int
    measured: str = ""
    load: float | None = None
    from_cache: bool = False


def _best_rate(
    run: Callable[[], object], flops: float, seconds: float, sync: Callable[[], None] = lambda: None
) -> float:
    """Operations per second of the fastest of repeated calls, for about ``seconds``."""
    run()  # warm-up: libraries pick kernels and allocate on the first call
    sync()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    calls = 0
    while calls < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
        calls += 1
    return flops / best


def _numpy_fp32(n: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    return _best_rate(lambda: a @ b, 2.0 * n**3, seconds)


def _torch_routes(n: int, seconds: float, dtype: str, device: str) -> list[tuple[float, str]]:
    """``torch.mm`` and the same product as a 1x1 convolution over ``n`` positions."""
    import torch

    kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device).to(kind)
    b = torch.randn(n, n, device=device).to(kind)
    image = b.reshape(1, n, n, 1).contiguous(memory_format=torch.channels_last)
    kernel = a.reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    flops = 2.0 * n**3
    with torch.inference_mode():
        mm = _best_rate(lambda: torch.mm(a, b), flops, seconds, sync)
        conv = _best_rate(lambda: torch.nn.functional.conv2d(image, kernel), flops, seconds, sync)
    return [(mm, "torch.mm"), (conv, "torch 1x1 conv2d")]


def _ort_gemm(n: int, seconds: float, threads: int, kind: str) -> float:
    """ONNX Runtime's CPU GEMM: ``MatMul`` (``fp32``), or ``MatMulInteger`` with uint8
    activations by int8 (``u8s8``) or uint8 (``u8u8``) weights."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "fp32":
        op, a_type, c_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
        b = rng.standard_normal((n, n), dtype=np.float32)
        a = rng.standard_normal((n, n), dtype=np.float32)
    else:
        op, a_type, c_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        low, high, dtype = (-128, 128, np.int8) if kind == "u8s8" else (0, 256, np.uint8)
        b = rng.integers(low, high, (n, n), dtype=dtype)
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["C"])],
        "gemm",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("C", c_type, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return _best_rate(lambda: session.run(None, {"A": a}), 2.0 * n**3, seconds)


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def measure_peak(kind: str, device: str, n: int, seconds: float, threads: int) -> Peak | None:
    """One kind's peak now: the best of its routes, each run for about ``seconds``.

    ``None`` when no library here runs that kind on ``device``.
    """
    from fstore.export.precision import int8_format

    logger.info(f"measuring the {kind} GEMM peak on {device} (n={n})")
    routes: list[tuple[float, str]] = []
    if kind == "fp32" and device == "cpu":
        routes.append((_numpy_fp32(n, seconds), "numpy matmul"))
        routes.append((_ort_gemm(n, seconds, threads, "fp32"), "onnxruntime MatMul"))
    if kind in ("fp32", "bf16", "fp16") and _has_torch():
        routes += _torch_routes(n, seconds, kind, device)
    if kind == "int8" and device == "cpu":
        fmt = int8_format()
        how = f"onnxruntime MatMulInteger ({fmt[:2]} x {fmt[2:]})"
        routes.append((_ort_gemm(n, seconds, threads, fmt), how))
    if not routes:
        return None
    rate, how = max(routes)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Peak(kind, rate / 1e9, how, n, measured=stamp, load=_load())


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cache_key(kind: str, device: str, n: int, threads: int) -> str:
    """What decides a peak: the machine, the threads, ``n`` and the libraries that run it."""
    from fstore.export.precision import int8_format

    versions = library_versions()
    facts = {
        "kind": kind,
        "format": int8_format() if kind == "int8" else None,
        "device": device,
        "processor": gpu_name() if device == "cuda" else cpu_model(),
        "flags": cpu_flags(),
        "threads": threads,
        "n": n,
        "libraries": {k: versions.get(k) for k in ("numpy", "torch", "onnxruntime")},
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def cache_path() -> Path:
    from fstore.runtime.cache import cache_dir

    return cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, dict]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(entries: dict[str, dict]) -> None:
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(entries, indent=1, sort_keys=True).encode())


def gemm_peaks(
    device: str = "cpu",
    n: int = 2048,
    seconds: float = 1.0,
    threads: int | None = None,
    kinds: tuple[str, ...] = ("fp32",),
    remeasure: bool = False,
) -> dict[str, Peak]:
    """The peak of each of ``kinds`` on ``device`` (``cpu`` or ``cuda``), cached.

    A kind found in the cache is reused unless ``remeasure``; a new measurement is stored,
    or, where the cached figure is higher, the cached one is kept. A kind no library here
    runs is left out.
    """
    threads = threads or usable_cores()
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    entries = _read_cache()
    peaks: dict[str, Peak] = {}
    for kind in kinds:
        key = cache_key(kind, device, n, threads)
        old = Peak(**{**entries[key], "from_cache": True}) if key in entries else None
        if old is not None and not remeasure:
            peaks[kind] = old
            continue
        new = measure_peak(kind, device, n, seconds, threads)
        if new is None:
            continue
        peaks[kind] = old if old is not None and old.gflops > new.gflops else new
        if peaks[kind] is new:
            entries = {**_read_cache(), key: asdict(new) | {"from_cache": False}}
            _write_cache(entries)
    return peaks
