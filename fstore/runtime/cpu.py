"""The CPU features that change a numeric path, and the one switch that hides them.

ONNX Runtime's int8 kernels and PyTorch's bf16 kernels behave differently on a CPU with
AVX-512 VNNI or AMX than on one with AVX2 only, so fstore picks formats by what the CPU offers.
A test of one of those paths must not depend on the CPU it runs on: setting ``FSTORE_CPU=avx2``
makes fstore choose exactly as on an x86-64 CPU with AVX2 only (no AVX-512, VNNI, AMX or bf16),
whatever this CPU has. ``FSTORE_CPU=native`` (or unset) reads ``/proc/cpuinfo``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from fstore.errors import FstoreError

#: The environment variable, and the values it takes.
CPU_ENV = "FSTORE_CPU"
CPU_MODES = ("native", "avx2")
#: Instruction-set flags (``/proc/cpuinfo``) with int8 dot products of unsigned by signed bytes.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: Flag prefixes an AVX2-only CPU lacks: what ``FSTORE_CPU=avx2`` removes.
_BEYOND_AVX2 = ("avx512", "avx_vnni", "amx", "avx_ne_convert", "avx_ifma")


def cpu_mode() -> str:
    """``FSTORE_CPU``'s value, checked: ``native`` or ``avx2``."""
    mode = os.environ.get(CPU_ENV, "").strip().lower() or "native"
    if mode not in CPU_MODES:
        raise FstoreError(f"{CPU_ENV}={mode!r} is not one of {', '.join(CPU_MODES)}")
    return mode


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _this_cpu() -> str | None:
    """The text of ``/proc/cpuinfo``; ``None`` where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The instruction-set flags in ``cpuinfo`` (the text of a ``/proc/cpuinfo``), or this
    CPU's, less what ``FSTORE_CPU=avx2`` hides; ``None`` where they cannot be read. The switch
    applies to this CPU only: a text given is read as it is."""
    mode = cpu_mode()
    if cpuinfo is None:
        cpuinfo = _this_cpu()
        if cpuinfo is None:
            return None
    elif mode == "avx2":
        mode = "native"
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split()}
    if mode == "avx2":
        flags = {f for f in flags if not f.startswith(_BEYOND_AVX2)}
    return frozenset(flags)


def has_vnni(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU multiplies uint8 by int8 exactly in 32 bits (VNNI or AMX); ``None``
    where its flags cannot be read."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else bool(flags & VNNI_FLAGS)
