"""The machine a benchmark ran on: CPU, GPU, libraries, measured GEMM peak, and peak memory.

The peak is *measured*, not taken from a data sheet: the best time of a square matrix product
(``n`` x ``n``, ``2 n^3`` operations) in the library that runs each kind of arithmetic:

* ``fp32``: the better of NumPy's BLAS and torch (oneDNN/MKL on CPU, cuBLAS on CUDA);
* ``bf16``: torch on CPU (the eager "best" variant's autocast type), ``fp16``: torch on CUDA;
* ``int8``: ONNX Runtime's ``MatMulInteger`` (uint8 x int8, the kernels its int8 models run).

The CPU's name and SIMD flags come from py-cpuinfo, memory from psutil. Peak memory is the
process's resident high-water mark (reset before each measured run; psutil's samples of the
resident size where the kernel has none) plus the private memory (USS) of child processes
such as ``DataLoader`` workers, sampled by psutil while the run goes on.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np

logger = logging.getLogger(__name__)

_FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)


@cache
def _cpu_info() -> dict:
    import cpuinfo

    return cpuinfo.get_cpu_info()


def cpu_model() -> str:
    """The CPU's marketing name (or the platform's guess)."""
    return _cpu_info().get("brand_raw") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that decide fp32, bf16 and int8 speed, as the CPU reports them."""
    present = set(_cpu_info().get("flags", ()))
    return [f for f in _FLAGS_OF_INTEREST if f in present]


def usable_cores() -> int:
    """Cores this process may run on (its affinity), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _memory_total_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def library_versions() -> dict[str, str]:
    """Versions of Python and of every library the benchmark times (``absent`` if missing)."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in (
        "fstore",
        "numpy",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "torch",
        "torchvision",
        "h5py",
        "pillow",
        "scikit-learn",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name != "onnxruntime-gpu":
                versions[name] = "absent"
    return versions


def gpu_name() -> str | None:
    """The first CUDA GPU's name, or ``None`` (torch decides; ONNX Runtime may still lack CUDA)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def machine_info() -> dict:
    """CPU, cores, memory, GPU, ONNX Runtime providers, load average and library versions."""
    import onnxruntime as ort

    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "memory_gib": _memory_total_gib(),
        "gpu": gpu_name(),
        "onnxruntime_providers": list(ort.get_available_providers()),
        "platform": platform.platform(),
        "load_average": load,
        "versions": library_versions(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


# --------------------------------------------------------------------------- GEMM peak


@dataclass(frozen=True)
class Peak:
    """A measured GEMM peak: ``gflops`` (10^9 operations per second) reached by ``how``."""

    kind: str
    gflops: float
    how: str
    n: int


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


def _torch_gemm(n: int, seconds: float, dtype: str, device: str) -> float:
    import torch

    kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device).to(kind)
    b = torch.randn(n, n, device=device).to(kind)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        return _best_rate(lambda: torch.mm(a, b), 2.0 * n**3, seconds, sync)


def _ort_int8(n: int, seconds: float, threads: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["C"])],
        "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.INT32, [n, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return _best_rate(lambda: session.run(None, {"A": a}), 2.0 * n**3, seconds)


def gemm_peaks(
    device: str = "cpu",
    n: int = 2048,
    seconds: float = 1.0,
    threads: int | None = None,
    kinds: tuple[str, ...] | None = None,
) -> dict[str, Peak]:
    """Measured GEMM peaks per arithmetic kind on ``device`` (``cpu`` or ``cuda``).

    CPU: ``fp32``, ``bf16`` (when torch is installed) and ``int8``; CUDA: ``fp32`` and
    ``fp16``. Each kind runs for about ``seconds`` with ``threads`` threads (all cores if None).
    A kind whose library is missing is left out.
    """
    threads = threads or usable_cores()
    kinds = kinds or (("fp32", "bf16", "int8") if device == "cpu" else ("fp32", "fp16"))
    peaks: dict[str, Peak] = {}
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    for kind in kinds:
        logger.info(f"measuring the {kind} GEMM peak on {device} (n={n})")
        if kind == "fp32":
            candidates = []
            if device == "cpu":
                candidates.append((_numpy_fp32(n, seconds), "numpy matmul"))
            if torch is not None:
                candidates.append((_torch_gemm(n, seconds, "fp32", device), "torch.mm"))
            if candidates:
                rate, how = max(candidates)
                peaks[kind] = Peak(kind, rate / 1e9, how, n)
        elif kind in ("bf16", "fp16") and torch is not None:
            peaks[kind] = Peak(kind, _torch_gemm(n, seconds, kind, device) / 1e9, "torch.mm", n)
        elif kind == "int8" and device == "cpu":
            peaks[kind] = Peak(
                kind, _ort_int8(n, seconds, threads) / 1e9, "onnxruntime MatMulInteger (u8 x s8)", n
            )
    return peaks


# --------------------------------------------------------------------------- memory


def rss_mib() -> float:
    """This process's resident memory now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mib() -> float | None:
    """This process's resident high-water mark (Linux's ``VmHWM``), or ``None`` elsewhere.

    Neither psutil nor ``resource`` gives it: ``ru_maxrss`` survives ``execve``, so a process
    spawned by a large parent reports the parent's peak; ``VmHWM`` belongs to the process's
    own memory map and can be reset (:func:`_reset_peak_rss`).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current resident size, where the kernel allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _children_uss_kib() -> int:
    """The private (unshared) memory of this process's descendants: what they add to it."""
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total // 1024


@dataclass
class PeakMemory:
    """Peak resident memory while the ``with`` block runs, in MiB.

    ``peak_mib`` is the process's peak plus its children's private memory at their sampled
    peak; ``extra_mib`` is that minus the process's resident size when the block started.
    On CUDA, ``gpu_peak_mib`` is device memory in use at its sampled peak, less the start.
    Memory the process freed earlier and reuses does not show as growth, so the numbers mean
    most in a fresh process: see :func:`measure_in_subprocess`.
    """

    interval: float = 0.02
    cuda: bool = False
    start_mib: float = 0.0
    peak_mib: float = 0.0
    gpu_peak_mib: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _child_peak_kib: int = 0
    _self_peak_kib: int = 0
    _gpu_start: float = 0.0
    _gpu_peak: float = 0.0

    @property
    def extra_mib(self) -> float:
        return max(0.0, self.peak_mib - self.start_mib)

    def __enter__(self) -> PeakMemory:
        _reset_peak_rss()
        self.start_mib = rss_mib()
        self._self_peak_kib = int(self.start_mib * 1024)
        if self.cuda:
            self._gpu_start = self._gpu_peak = _gpu_used_mib()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="fstore-peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._child_peak_kib = max(self._child_peak_kib, _children_uss_kib())
            self._self_peak_kib = max(self._self_peak_kib, int(rss_mib() * 1024))
            if self.cuda:
                self._gpu_peak = max(self._gpu_peak, _gpu_used_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        own = max(self._self_peak_kib / 1024, _peak_rss_mib() or 0.0, rss_mib())
        self.peak_mib = own + self._child_peak_kib / 1024
        if self.cuda:
            self._gpu_peak = max(self._gpu_peak, _gpu_used_mib())
            self.gpu_peak_mib = self._gpu_peak - self._gpu_start


def _gpu_used_mib() -> float:
    try:
        import torch

        free, total = torch.cuda.mem_get_info()
    except Exception:  # noqa: BLE001 - no torch, no CUDA: no GPU memory to report
        return 0.0
    return (total - free) / 2**20


def _measure_child(conn, target: Callable, args: tuple, cuda: bool) -> None:
    try:
        with PeakMemory(cuda=cuda) as mem:
            target(*args)
        conn.send(
            {
                "start_mib": mem.start_mib,
                "peak_mib": mem.peak_mib,
                "extra_mib": mem.extra_mib,
                "gpu_peak_mib": mem.gpu_peak_mib,
            }
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which re-raises
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def measure_in_subprocess(target: Callable, *args, cuda: bool = False) -> dict:
    """Run ``target(*args)`` in a fresh (spawned) process and return its memory use in MiB.

    ``extra_mib`` is the growth of that process's resident memory from just before ``target``
    runs (interpreter and the modules needed to unpickle ``target`` loaded) to its peak,
    child processes' private memory included. Libraries ``target`` imports itself (torch,
    onnxruntime) count, as they do for a user. ``target`` and ``args`` must be picklable.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_measure_child, args=(send, target, args, cuda), name="fstore-bench-memory"
    )
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        process.join()
        result = {"error": f"the measuring process died (exit code {process.exitcode})"}
    finally:
        process.join()
    if "error" in result:
        raise RuntimeError(f"memory measurement failed: {result['error']}")
    return result
