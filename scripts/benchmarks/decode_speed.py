"""Decode throughput of fstore's reader: exact vs fast, threads vs worker processes writing
into shared memory, on the same images and cores.

    PYTHONPATH=$PWD python scripts/benchmarks/decode_speed.py FOLDER [--limit 600] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from fstore.fsutil import peak_rss_mib
from fstore.images.discover import scan
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import ImageReader

SLOTS = 256
_state: dict = {}


def _attach(name: str, mode: str) -> None:
    shm = shared_memory.SharedMemory(name=name)
    _state["shm"] = shm
    _state["buf"] = np.ndarray((SLOTS, 224, 224, 3), np.uint8, buffer=shm.buf)
    _state["reader"] = ImageReader(Preprocessing(), mode)


def _decode_into(task) -> int:
    slot, item = task
    decoded = _state["reader"].read(item, out=_state["buf"][slot])
    return slot if decoded.error is None else -1


def threads(items, mode: str, workers: int) -> float:
    reader = ImageReader(Preprocessing(), mode)
    buf = np.empty((SLOTS, 224, 224, 3), np.uint8)
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda t: reader.read(t[1], out=buf[t[0]]), enumerate_slots(items)))
    return len(items) / (time.perf_counter() - start)


def processes(items, mode: str, workers: int) -> float:
    shm = shared_memory.SharedMemory(create=True, size=SLOTS * 224 * 224 * 3)
    try:
        with ProcessPoolExecutor(workers, initializer=_attach, initargs=(shm.name, mode)) as pool:
            list(pool.map(_decode_into, enumerate_slots(items[:workers]), chunksize=1))  # warm
            start = time.perf_counter()
            list(pool.map(_decode_into, enumerate_slots(items), chunksize=8))
            return len(items) / (time.perf_counter() - start)
    finally:
        shm.close()
        shm.unlink()


def enumerate_slots(items):
    return [(i % SLOTS, item) for i, item in enumerate(items)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    items = scan(args.folder)[:: max(1, len(scan(args.folder)) // args.limit)][: args.limit]
    for item in items:  # page cache warm for every method alike
        item.path.read_bytes()
    print(f"{len(items)} images from {args.folder}, {args.workers} workers, "
          f"load {open('/proc/loadavg').read().split()[:3]}")  # fmt: skip
    results = {}
    for mode in ("exact", "fast"):
        for pool in (threads, processes):
            results[mode, pool.__name__] = rate = pool(items, mode, args.workers)
            print(f"  {mode:5s} {pool.__name__:9s} {rate:7.0f} images/s", flush=True)
    for pool in ("threads", "processes"):
        ratio = results["fast", pool] / results["exact", pool]
        print(f"  fast / exact ({pool}): {ratio:.2f}")
    print(f"peak memory {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
