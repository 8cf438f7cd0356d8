"""Small file helpers at the bottom of fstore's layers.

Crash-safe writes (write under a temporary name, fsync, rename, fsync the folder) and
JSON-ready values. Imports nothing of fstore.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from pathlib import Path, PurePath
from typing import Any


def fsync_path(path: Path) -> None:
    """fsync a file (its data) or a folder (the renames inside it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, atomically rename it to ``final`` and fsync the folder."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def tmp_path_for(final: Path) -> Path:
    """A temporary name next to ``final``, unique to this process."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def tmp_paths_of(final: Path) -> list[Path]:
    """The temporary files of :func:`tmp_path_for` that any process left next to ``final``."""
    import glob

    return list(final.parent.glob(f".{glob.escape(final.name)}.*.tmp"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one."""
    tmp = tmp_path_for(path)
    tmp.write_bytes(data)
    commit_file(tmp, path)


def printable(text: str) -> str:
    """``text`` with control characters (a newline, an escape sequence) and other unprintable
    ones written as Python escapes (``\\n``, ``\\x1b``), so that a file name prints as what it
    is, on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def name_text(name: str) -> str:
    """A file name as UTF-8 text: the bytes that are not UTF-8 (which ``os`` keeps as lone
    surrogates) written as ``\\xNN``, so that the name can be stored and printed."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON data: NumPy arrays and scalars to Python, tuples to lists, paths
    to strings, dict keys to strings, NaN and infinities to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # NumPy arrays and scalars
        return json_ready(value.tolist())
    return value


def json_text(data: Any, indent: int | None = 1) -> str:
    """:func:`json_ready` data as JSON text (strict: no NaN)."""
    return json.dumps(json_ready(data), indent=indent, allow_nan=False)


def peak_rss_mib() -> float:
    """This process's resident high-water mark, in MiB.

    Linux's ``VmHWM`` belongs to the process's own memory map. ``ru_maxrss`` survives
    ``execve`` there, so a build spawned by a large parent (a test run, a benchmark) would report
    the parent's peak; it is only the fallback where ``/proc`` is absent (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
