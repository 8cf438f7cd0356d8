"""Crash-safe file writes: write under a temporary name, fsync, rename, fsync the folder."""

from __future__ import annotations

import os
from pathlib import Path


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = tmp_path_for(path)
    tmp.write_bytes(data)
    commit_file(tmp, path)
