"""The best eager PyTorch variant on this machine: measured, not assumed.

Which of fp32, ``channels_last`` and bf16 (or fp16 on CUDA) is fastest depends on the CPU: on
one without native bf16, bf16 autocast is several times slower than fp32; on one with it, bf16
can win. A short probe runs every candidate of :data:`~fstore.benchmarks.eager.CANDIDATES` on
the same small batch, interleaved (the order rotates from round to round, as in the model
view), and keeps the one with the fewest median seconds per image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median

import numpy as np

from fstore.benchmarks.statistics import rotated
from fstore.benchmarks.views import SETTLE_SECONDS, time_batches
from fstore.runtime.backend import Backend

logger = logging.getLogger(__name__)

#: Images per probe batch, and timed rounds after one untimed run: a few seconds per candidate.
PROBE_BATCH = 1
PROBE_ROUNDS = 3


@dataclass(frozen=True)
class Probe:
    """What the probe measured: each candidate's median seconds per image, and the choice."""

    seconds_per_image: dict[str, float]
    chosen: str
    batch_size: int
    rounds: int


def fastest(seconds_per_image: dict[str, float]) -> str:
    """The variant with the fewest seconds per image; of equal ones, the first given."""
    if not seconds_per_image:
        raise ValueError("no variant was measured")
    return min(seconds_per_image, key=seconds_per_image.__getitem__)


def probe_variants(
    make: Callable[[str], Backend],
    candidates: tuple[str, ...],
    batch: np.ndarray,
    rounds: int = PROBE_ROUNDS,
    settle: float = SETTLE_SECONDS,
) -> Probe:
    """Time ``make(name)`` (a loaded backend) for every candidate on ``batch``; keep the fastest.

    Each candidate runs once untimed (kernel choice, first allocations), then ``rounds``
    times, interleaved.
    """
    backends = {}
    for name in candidates:
        backends[name] = make(name)
        time_batches(backends[name], batch, 1)
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for r in range(rounds):
        for name in rotated(list(candidates), r):
            time.sleep(settle)
            seconds[name].append(time_batches(backends[name], batch, 1))
    per_image = {name: median(s) / len(batch) for name, s in seconds.items()}
    chosen = fastest(per_image)
    shown = ", ".join(f"{name} {1 / s:.2f}" for name, s in per_image.items())
    logger.info("eager variants, batch %d: %s images/s; fastest: %s", len(batch), shown, chosen)
    return Probe(per_image, chosen, len(batch), rounds)
