"""Discovery skips what is not a regular file (FIFO, socket, a folder named like an image) and
records why; a build over a folder holding a FIFO named ``x.jpg`` finishes."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from helpers import SMALL, make_image_folder, write_noop_model

from fstore.images.discover import ImageItem, discover, scan
from fstore.images.reader import ImageReader
from fstore.pipeline.config import BuildConfig
from fstore.pipeline.model import build_store

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


@pytest.fixture
def odd_folder(tmp_path):
    root = tmp_path / "images"
    make_image_folder(root, {"alpha": 3, "beta": 2})
    os.mkfifo(root / "alpha" / "pipe.jpg")
    (root / "beta" / "folder.jpg").mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = root / "beta" / "sock.png"
    if len(str(path)) < 100:  # AF_UNIX paths are short
        sock.bind(str(path))
    yield root
    sock.close()


def test_non_regular_files_are_skipped_with_a_reason(odd_folder):
    found = discover(odd_folder)
    assert [it.key for it in found.items] == [
        "alpha/img_000.jpg", "alpha/img_001.jpg", "alpha/img_002.jpg",
        "beta/img_000.jpg", "beta/img_001.jpg",
    ]  # fmt: skip
    assert found.skipped["alpha/pipe.jpg"] == "not a regular file: a FIFO"
    assert found.skipped["beta/folder.jpg"] == "not a regular file: a folder"
    if (odd_folder / "beta" / "sock.png").exists():
        assert found.skipped["beta/sock.png"] == "not a regular file: a socket"
    assert scan(odd_folder) == found.items


def test_reader_refuses_a_fifo_without_blocking(tmp_path):
    """A FIFO that appears after discovery is recorded as unreadable, never opened blocking."""
    os.mkfifo(tmp_path / "late.jpg")
    decoded = ImageReader(SMALL).read(ImageItem("late.jpg", tmp_path / "late.jpg"))
    assert decoded.array is None and decoded.error.startswith("unreadable")


def test_build_over_a_folder_with_a_fifo_finishes(odd_folder, tmp_path):
    model = write_noop_model(tmp_path / "noop.onnx")
    config = BuildConfig(store=tmp_path / "s.h5", images=odd_folder, model=model,
                         preprocessing=SMALL, provider="cpu", batch_size=2)  # fmt: skip
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("report", build_store(config)))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the build hangs on the FIFO"
    report = result["report"]
    assert report.images_computed == 5 and report.errors == 0
    assert report.skipped["alpha/pipe.jpg"] == "not a regular file: a FIFO"
