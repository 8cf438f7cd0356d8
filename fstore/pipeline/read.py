"""The read stage of ``fstore build``: images → uint8 NHWC batches, in order, a few ahead.

A pool of decode threads reads, hashes and decodes each image (:class:`ImageReader`) straight
into a slot of a preallocated batch buffer. Buffers are reused round-robin, so memory is
bounded by batch size × buffers, whatever the number of images. Threads rather than processes:
libjpeg-turbo, Pillow's decoders and its resize all release the GIL (measured against worker
processes with shared memory; see the README's speed section).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fstore.images.discover import ImageItem
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import MAX_IMAGE_BYTES, Decoded, ImageReader
from fstore.images.views import ViewPlan

logger = logging.getLogger(__name__)


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


class Progress:
    """Images done out of ``total``: a tqdm bar on a terminal; elsewhere (a log, CI, ``nohup``)
    one line every ``every`` seconds with the rate and the time left; nothing when ``show`` is
    False."""

    def __init__(self, total: int, desc: str, show: bool | None, every: float = 30.0) -> None:
        from tqdm import tqdm

        self.total, self.desc, self.every, self.done = total, desc, every, 0
        self.start = self.last = time.monotonic()
        terminal = sys.stderr.isatty()
        self.log = show is not False and not terminal
        bar = terminal if show is None else show and terminal
        self.bar = tqdm(total=total, unit="img", disable=not bar, dynamic_ncols=True, desc=desc)

    def update(self, n: int) -> None:
        self.bar.update(n)
        self.done += n
        now = time.monotonic()
        if self.log and now - self.last >= self.every:
            self.last, rate = now, self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate else 0.0
            logger.info(f"{self.desc}: {self.done:,} of {self.total:,} images "
                        f"({self.done / max(self.total, 1):.0%}), {rate:.1f} images/s, "
                        f"about {left / 60:.0f} min left")  # fmt: skip

    def close(self) -> None:
        self.bar.close()


@dataclass
class Batch:
    """One batch of a shard: every image's result, and the good ones' pixels.

    ``pixels`` is uint8 ``(n_good, crop, crop, 3)`` (``(n_good, views, crop, crop, 3)`` with
    views), a view of a reused buffer: valid until the consumer asks for the next batch but
    ``ahead`` more.
    """

    shard: str
    decoded: list[Decoded]  # good and bad, in shard order
    last_of_shard: bool
    pixels: np.ndarray

    @property
    def good(self) -> list[Decoded]:
        return [d for d in self.decoded if d.array is not None]

    @property
    def model_input(self) -> np.ndarray:
        """The pixels as the model takes them: every view of every good image, one per row."""
        return self.pixels.reshape(-1, *self.pixels.shape[-3:])


def _chunks(work: Work, batch_size: int) -> Iterator[tuple[str, list[ImageItem], bool]]:
    for name, items in work.shards:
        count = (len(items) + batch_size - 1) // batch_size
        for i in range(count):
            yield name, items[i * batch_size : (i + 1) * batch_size], i == count - 1


def _settle(decoded: list[Decoded], buffer: np.ndarray, count: int):
    good = [i for i, d in enumerate(decoded) if d.array is not None]
    if len(good) == count:
        return decoded, buffer[:count]
    return decoded, buffer[good]  # a copy; only batches with bad images take it


#: How decode workers run: threads (libjpeg-turbo and Pillow release the GIL for part of the
#: work) or processes writing into shared-memory batch buffers (no GIL at all).
POOLS = ("threads", "processes")


class _ProcessPool:
    """Decode worker processes that write pixels straight into shared-memory batch buffers."""

    def __init__(self, reader: ImageReader, shape: tuple[int, ...], workers: int) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing.shared_memory import SharedMemory

        self.shm = SharedMemory(create=True, size=int(np.prod(shape)))
        self.buffers = np.ndarray(shape, np.uint8, buffer=self.shm.buf)
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),  # never fork a process that holds ORT threads
            initializer=_attach,
            initargs=(self.shm.name, shape, reader),
        )

    def decode(self, n: int, chunk: list[ImageItem]):
        slot = n % len(self.buffers)
        jobs = [(item, slot, row) for row, item in enumerate(chunk)]
        decoded = list(self.executor.map(_read_shared, jobs, chunksize=8))
        for row, d in enumerate(decoded):
            if d.array is not None:
                d.array = self.buffers[slot, row]
        return _settle(decoded, self.buffers[slot], len(chunk))

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)
        self.shm.unlink()  # the memory goes once the last view of a batch is gone
        try:
            del self.buffers
            self.shm.close()
        except BufferError:  # a batch still held by the caller keeps the mapping alive
            pass


_SHARED: dict = {}


def _attach(name: str, shape: tuple[int, ...], reader: ImageReader) -> None:
    from multiprocessing.shared_memory import SharedMemory

    shm = SharedMemory(name=name)
    _SHARED.update(shm=shm, buffers=np.ndarray(shape, np.uint8, buffer=shm.buf), reader=reader)


def _read_shared(job: tuple[ImageItem, int, int]) -> Decoded:
    item, slot, row = job
    decoded = _SHARED["reader"].read(item, _SHARED["buffers"][slot, row])
    if decoded.array is not None:
        decoded.array = np.empty(0, np.uint8)  # the pixels are in shared memory already
    return decoded


def iter_batches(
    work: Work,
    preprocessing: Preprocessing,
    batch_size: int,
    workers: int | None = None,
    decode: str = "exact",
    ahead: int = 4,
    pool: str = "threads",
    views: ViewPlan | None = None,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> Iterator[Batch]:
    """Decode ``work`` in a pool of ``workers`` threads or processes (``pool``), in order, up to
    ``ahead`` batches before the consumer. ``workers`` defaults to :func:`default_workers`.
    ``views``: cut these views from each decoded image (``None``: the plain crop alone).
    ``max_bytes``: larger files are recorded as bad, unread.
    """
    reader = ImageReader(preprocessing, decode, views, max_bytes)
    # buffers: ``ahead`` queued, one being put, one being decoded, two held by the consumer
    shape = (ahead + 4, batch_size) + reader.shape
    out: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    count = max(1, workers or default_workers())
    processes = _ProcessPool(reader, shape, count) if pool == "processes" else None

    def produce() -> None:
        try:
            if processes is not None:
                _produce_in_processes(work, processes, shape, (out, stop))
            else:
                _produce_in_threads(work, reader, shape, count, (out, stop))
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
        if processes is not None:
            processes.close()


def _produce_in_threads(work: Work, reader: ImageReader, shape, count: int, channel) -> None:
    """Each image is its own task, and the next batch's tasks are queued before this batch is
    collected, so that no decode thread waits for the slowest image of a batch."""
    out, stop = channel
    buffers = np.empty(shape, np.uint8)
    started: deque = deque()

    def deliver() -> None:
        name, last, buffer, futures = started.popleft()
        decoded, pixels = _settle([f.result() for f in futures], buffer, len(futures))
        out.put(Batch(name, decoded, last, pixels))

    with ThreadPoolExecutor(max_workers=count) as pool:
        for n, (name, chunk, last) in enumerate(_chunks(work, shape[1])):
            if stop.is_set():
                return
            buffer = buffers[n % shape[0]]
            futures = [pool.submit(reader.read, item, row) for item, row in zip(chunk, buffer)]
            started.append((name, last, buffer, futures))
            if len(started) > 1:
                deliver()
        while started:
            deliver()


def _produce_in_processes(work: Work, pool: _ProcessPool, shape, channel) -> None:
    out, stop = channel
    for n, (name, chunk, last) in enumerate(_chunks(work, shape[1])):
        if stop.is_set():
            return
        decoded, pixels = pool.decode(n, chunk)
        out.put(Batch(name, decoded, last, pixels))


def _consume(out: queue.Queue) -> Iterator[Batch]:
    while True:
        got = out.get()
        if got is None:
            return
        if isinstance(got, BaseException):
            raise got
        yield got
