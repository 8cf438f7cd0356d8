"""The benchmark's views: each times every one of its systems in the same process, interleaved.

* **model only**: the same in-memory batches (``uint8`` NHWC, as the reader makes them)
  through each backend's ``run(batch)``. Each system is loaded and warmed up at every batch
  size first. Then, per batch size, ``repeats`` rounds; in each round every system (in an order
  rotated from round to round) runs enough batches to cover at least ``min_images`` images.
* **end to end**: images on disk → features in a store, each system's whole path, ``repeats``
  rounds, after one untimed run on a few images.
* **pipeline**: the end-to-end timing of two input pipelines around a no-op model
  (:mod:`.pipeline`): ``fstore build`` and the eager ``DataLoader``.

Peak memory is measured apart from the timings, each system in a fresh process (so that the
systems sharing the timing process do not blur each other's numbers): the growth of its
resident memory while it imports its library, loads its model and runs one batch of every
size (model view), or while it runs end to end on the warm-up images, ``DataLoader`` workers
included (end-to-end and pipeline views).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fstore.benchmarks.statistics import BASELINE, Row, make_row, median_details, rotated
from fstore.runtime.backend import Backend

logger = logging.getLogger(__name__)

#: Pause between two systems, so one's spinning worker threads do not slow the next.
SETTLE_SECONDS = 0.05


def time_batches(backend: Backend, batch: np.ndarray, iterations: int) -> float:
    """Seconds to run ``batch`` ``iterations`` times, queued device work included."""
    start = time.perf_counter()
    for _ in range(iterations):
        backend.run(batch)
    backend.synchronize()
    return time.perf_counter() - start


def _load_and_warm(
    loader: Callable[[], Backend], inputs: np.ndarray, batch_sizes: tuple[int, ...], warmup: int
) -> tuple[Backend, float, dict[str, np.ndarray]]:
    """A loaded backend, its load time, and its features of the largest batch."""
    start = time.perf_counter()
    backend = loader()
    seconds = time.perf_counter() - start
    out: dict[str, np.ndarray] = {}
    for size in sorted(batch_sizes):
        for _ in range(max(1, warmup)):
            out = backend.run(inputs[:size])
        backend.synchronize()
    return backend, seconds, out


def model_view(
    systems: list,
    loaders: dict[str, Callable[[], Backend]],
    inputs: np.ndarray,
    *,
    batch_sizes: tuple[int, ...],
    repeats: int,
    warmup: int,
    min_images: int,
    settle: float = SETTLE_SECONDS,
) -> tuple[list[Row], dict]:
    """Time every system on the same in-memory batches; returns rows and features to compare.

    ``loaders`` make each system's loaded backend. Every system is loaded and warmed up at
    every batch size before any timing. The features returned are each system's outputs on
    the largest batch, for fidelity.
    """
    backends, load_seconds, features = {}, {}, {}
    for system in systems:
        logger.info("model view: loading and warming up %s", system.id)
        backends[system.id], load_seconds[system.id], features[system.id] = _load_and_warm(
            loaders[system.id], inputs, batch_sizes, warmup
        )
    rows = []
    for size in batch_sizes:
        iterations = max(1, math.ceil(min_images / size))
        batch = np.ascontiguousarray(inputs[:size])
        seconds: dict[str, list[float]] = {s.id: [] for s in systems}
        for r in range(repeats):
            for system in rotated(systems, r):
                time.sleep(settle)
                elapsed = time_batches(backends[system.id], batch, iterations)
                seconds[system.id].append(elapsed / iterations)
        for system in systems:
            row = make_row("model", system, size, size * iterations, seconds[system.id])
            row.details = {"iterations": iterations, "load_seconds": load_seconds[system.id]}
            rows.append(row)
        shown = ", ".join(f"{r.system} {r.images_per_s.median:.1f}" for r in rows[-len(systems) :])
        logger.info("model view: batch %d: %s images/s", size, shown)
    return rows, features


@dataclass(frozen=True)
class Rounds:
    """How a whole-run view times its systems.

    ``runners[id](out, images)`` writes the features of ``images`` to ``out`` and returns
    details (time per stage...); each system first runs once, untimed, on ``warm_set``.
    """

    view: str
    batch_size: int
    repeats: int
    workdir: Path
    warm_set: Any | None = None
    settle: float = SETTLE_SECONDS


def whole_runs(
    systems: list, runners: dict[str, Callable[[Path, Any], dict]], image_set: Any, how: Rounds
) -> tuple[list[Row], dict[str, Path]]:
    """Time each system's whole path from image files to a feature file, ``how.repeats`` rounds.

    Returns rows and, per system, the output of its first timed round.
    """
    if how.warm_set is not None:
        for system in systems:  # first calls: imports, worker start-up, kernel choices
            logger.info("%s: warming up %s on %d images", how.view, system.id, how.warm_set.count)
            runners[system.id](how.workdir / f"warm-{system.id}.h5", how.warm_set)
    seconds: dict[str, list[float]] = {s.id: [] for s in systems}
    details: dict[str, list[dict]] = {s.id: [] for s in systems}
    for r in range(how.repeats):
        for system in rotated(systems, r):
            time.sleep(how.settle)
            out = how.workdir / f"{system.id}-{r}.h5"
            start = time.perf_counter()
            details[system.id].append(runners[system.id](out, image_set))
            elapsed = time.perf_counter() - start
            seconds[system.id].append(elapsed)
            rate = image_set.count / elapsed
            logger.info(
                "%s: %s round %d: %.2f s, %.1f images/s", how.view, system.id, r + 1, elapsed, rate
            )
    rows = []
    for system in systems:
        row = make_row(how.view, system, how.batch_size, image_set.count, seconds[system.id])
        row.details = median_details(details[system.id])
        rows.append(row)
    first = {s.id: how.workdir / f"{s.id}-0.h5" for s in systems}
    return rows, first


def agreement(first: dict[str, Path], layer: str) -> dict:
    """Eager fp32's features against fstore fp32's, image by image (same keys)."""
    from fstore.benchmarks.eager import read_eager_store
    from fstore.export.precision import compare_features
    from fstore.store import load_features

    if BASELINE not in first or "ort-fp32" not in first:
        return {}
    keys, feats = read_eager_store(first[BASELINE])
    fs = load_features(first["ort-fp32"], layer)
    where = {k: i for i, k in enumerate(fs.keys)}
    position = {k: i for i, k in enumerate(keys)}
    common = [k for k in keys if k in where]
    if not common:
        return {"images": 0}
    eager = feats[layer][[position[k] for k in common]]
    ours = fs.X[[where[k] for k in common]]
    row = compare_features({layer: eager}, {layer: ours})[layer]
    row["eager_images"], row["fstore_images"] = len(keys), len(fs.keys)
    return row


# --------------------------------------------------------------------------- memory


def _load_and_run(spec: Any, inputs: Path, batch_sizes: tuple[int, ...]) -> None:
    """Memory probe of the model view: load, then one batch of every size."""
    batch = np.load(inputs)
    backend = spec.make()
    for size in batch_sizes:
        backend.run(batch[:size])
    backend.synchronize()


def _end_to_end_once(spec: Any, out: Path, images: Any) -> None:
    """Memory probe of a whole-run view."""
    spec.run(out, images)


@dataclass(frozen=True)
class MemoryProbe:
    """One system's memory measurement: ``view``, ``system`` and the spec that makes it."""

    view: str
    system: str
    spec: Any


def measure_memory(
    probes: list[MemoryProbe], inputs: Path, batch_sizes: tuple[int, ...], warm_set: Any, cuda: bool
) -> dict[str, dict[str, dict]]:
    """Peak memory of each probe, each in a fresh process: ``{view: {system: use}}``.

    Model-view probes load and run one batch of each size of ``inputs`` (a ``.npy`` file);
    the others run end to end on ``warm_set``, writing next to ``inputs``.
    """
    from fstore.benchmarks.machine import measure_in_subprocess

    found: dict[str, dict[str, dict]] = {}
    for probe in probes:
        logger.info("memory: %s, %s", probe.view, probe.system)
        if probe.view == "model":
            args: tuple = (_load_and_run, probe.spec, inputs, batch_sizes)
        else:
            out = inputs.parent / f"memory-{probe.view}-{probe.system}.h5"
            args = (_end_to_end_once, probe.spec, out, warm_set)
        found.setdefault(probe.view, {})[probe.system] = measure_in_subprocess(*args, cuda=cuda)
    return found


def apply_memory(rows: list[Row], memory: dict[str, dict[str, dict]]) -> None:
    """Copy each system's measured peak memory into its rows of the same view."""
    for row in rows:
        use = memory.get(row.view, {}).get(row.system)
        if use:
            row.peak_mib = use["extra_mib"]
            row.gpu_peak_mib = use.get("gpu_peak_mib")
