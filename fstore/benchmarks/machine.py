"""The machine a benchmark ran on: CPU, GPU, libraries, and peak memory.

Its measured GEMM peaks are in :mod:`.peaks`. The CPU's name and SIMD flags come from
py-cpuinfo, memory from psutil. Peak memory is the process's resident high-water mark (reset
before each measured run; psutil's samples of the resident size where the kernel has none)
plus the private memory (USS) of child processes such as ``DataLoader`` workers, sampled by
psutil while the run goes on.
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from fstore.fsutil import peak_rss_mib

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


# --------------------------------------------------------------------------- memory


def rss_mib() -> float:
    """This process's resident memory now, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_peak_rss() -> None:
    """Reset ``VmHWM`` (:func:`fstore.fsutil.peak_rss_mib`) to the current resident size, where
    the kernel allows it."""
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
        own = max(self._self_peak_kib / 1024, peak_rss_mib(), rss_mib())
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
