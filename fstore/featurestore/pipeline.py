"""The read stage of ``fstore build``: images → uint8 NHWC batches, in order, a few ahead.

A pool of decode threads reads, hashes and decodes each image (:class:`ImageReader`) straight
into a slot of a preallocated batch buffer. Buffers are reused round-robin, so memory is
bounded by batch size × buffers, whatever the number of images. Threads rather than processes:
libjpeg-turbo, Pillow's decoders and its resize all release the GIL (measured against worker
processes with shared memory; see the README's speed section).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fstore.images.discover import ImageItem
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import Decoded, ImageReader


def default_workers() -> int:
    """Decode workers by default: the cores this process may run on."""
    return len(os.sched_getaffinity(0))


@dataclass
class Work:
    """The shards to compute in this run: (shard name, its items), in order."""

    shards: list[tuple[str, list[ImageItem]]]
    done_before: int
    total: int

    @property
    def pending(self) -> int:
        return sum(len(items) for _, items in self.shards)


@dataclass
class Batch:
    """One batch of a shard: every image's result, and the good ones' pixels.

    ``pixels`` is uint8 ``(n_good, crop, crop, 3)``, a view of a reused buffer: valid until the
    consumer asks for the next batch but ``ahead`` more.
    """

    shard: str
    decoded: list[Decoded]  # good and bad, in shard order
    last_of_shard: bool
    pixels: np.ndarray
    preprocessing: Preprocessing

    @property
    def good(self) -> list[Decoded]:
        return [d for d in self.decoded if d.array is not None]


def _chunks(work: Work, batch_size: int) -> Iterator[tuple[str, list[ImageItem], bool]]:
    for name, items in work.shards:
        count = (len(items) + batch_size - 1) // batch_size
        for i in range(count):
            yield name, items[i * batch_size : (i + 1) * batch_size], i == count - 1


def _decode_batch(pool, reader: ImageReader, chunk: list[ImageItem], buffer: np.ndarray):
    decoded = list(pool.map(reader.read, chunk, buffer[: len(chunk)]))
    good = [i for i, d in enumerate(decoded) if d.array is not None]
    if len(good) == len(chunk):
        return decoded, buffer[: len(chunk)]
    return decoded, buffer[good]  # a copy; only batches with bad images take it


def iter_batches(
    work: Work,
    preprocessing: Preprocessing,
    batch_size: int,
    workers: int | None = None,
    decode: str = "exact",
    ahead: int = 4,
) -> Iterator[Batch]:
    """Decode ``work`` in a thread pool, in order, up to ``ahead`` batches before the consumer.

    ``workers`` defaults to :func:`default_workers`.
    """
    reader = ImageReader(preprocessing, decode)
    buffers = [np.empty((batch_size,) + reader.shape, np.uint8) for _ in range(ahead + 3)]
    out: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def produce() -> None:
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers or default_workers())) as pool:
                for n, (name, chunk, last) in enumerate(_chunks(work, batch_size)):
                    if stop.is_set():
                        return
                    decoded, pixels = _decode_batch(pool, reader, chunk, buffers[n % len(buffers)])
                    out.put(Batch(name, decoded, last, pixels, preprocessing))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer to re-raise
            out.put(exc)
            return
        out.put(None)

    thread = threading.Thread(target=produce, name="fstore-reader", daemon=True)
    thread.start()
    try:
        yield from _consume(out)
    finally:
        stop.set()
        while thread.is_alive():
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _consume(out: queue.Queue) -> Iterator[Batch]:
    while True:
        got = out.get()
        if got is None:
            return
        if isinstance(got, BaseException):
            raise got
        yield got
