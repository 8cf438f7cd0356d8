"""The benchmark's statistics: medians with their spread over rounds, ratios, share of peak.

Every timing is repeated in rounds; a :class:`Row` keeps the seconds of each round and their
median, minimum and maximum as images/s and as milliseconds per batch. Ratios divide a
system's median images/s by its view's baseline's median, at the same batch size, from the
same run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Any

#: The reference of each view: eager fp32 for the model, the DataLoader for the input side.
BASELINE = "eager-fp32"
PIPELINE_BASELINE = "loader-noop"
BASELINES = {"model": BASELINE, "e2e": BASELINE, "pipeline": PIPELINE_BASELINE}


@dataclass(frozen=True)
class Spread:
    """Median, minimum and maximum of repeated measurements."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(float(median(values)), float(min(values)), float(max(values)))


@dataclass
class Row:
    """One system in one view at one batch size.

    Attributes:
        view: ``model``, ``e2e`` or ``pipeline``.
        system, label: the system's id and description.
        batch_size: images per batch.
        images: images per timed round.
        batch_seconds: per round, seconds per batch (model) or of the whole run (others).
        images_per_s, latency_ms: per-round throughput and time per batch, as spreads.
        ratio: median images/s over the view's baseline's at the same batch size.
        peak_mib: peak resident memory attributable to the system (see :mod:`.views`).
        gpu_peak_mib: device memory on CUDA.
        fraction_of_peak: share of the measured GEMM peak (of ``peak_kind``) reached.
        details: what else was measured (load time, time per stage...).
    """

    view: str
    system: str
    label: str
    batch_size: int
    images: int
    batch_seconds: list[float]
    images_per_s: Spread
    latency_ms: Spread
    ratio: float | None = None
    peak_mib: float | None = None
    gpu_peak_mib: float | None = None
    fraction_of_peak: float | None = None
    peak_kind: str | None = None
    details: dict = field(default_factory=dict)


def make_row(view: str, system: Any, batch_size: int, images: int, seconds: list[float]) -> Row:
    """A row from per-round seconds: per batch (model view) or per whole run (other views).

    ``system`` is a :class:`~fstore.benchmarks.systems.System` (its ``id`` and ``label``).
    """
    batches = 1 if view == "model" else max(1, math.ceil(images / batch_size))
    per_image = batch_size if view == "model" else images
    return Row(
        view=view,
        system=system.id,
        label=system.label,
        batch_size=batch_size,
        images=images,
        batch_seconds=list(seconds),
        images_per_s=Spread.of([per_image / s for s in seconds]),
        latency_ms=Spread.of([1000.0 * s / batches for s in seconds]),
    )


def median_details(details: list[dict]) -> dict[str, float]:
    """The median over rounds of every numeric detail (time per stage...)."""
    if not details:
        return {}
    return {
        k: float(median([d[k] for d in details]))
        for k, v in details[0].items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def rotated(items: list, k: int) -> list:
    """``items`` started at position ``k``: each round starts with another system."""
    k %= max(1, len(items))
    return items[k:] + items[:k]


def add_ratios(rows: list[Row]) -> None:
    """Set each row's ``ratio`` against its view's baseline row at the same batch size."""
    base = {
        (r.view, r.batch_size): r.images_per_s.median
        for r in rows
        if r.system == BASELINES.get(r.view)
    }
    for row in rows:
        ref = base.get((row.view, row.batch_size))
        row.ratio = row.images_per_s.median / ref if ref else None


def add_fractions(
    rows: list[Row], arithmetic: dict[str, str | None], peaks: dict[str, dict], flops: float
) -> list[str]:
    """Set each row's share of the measured GEMM peak of its system's ``arithmetic``.

    ``flops`` is the work per image; a system without arithmetic (the pipeline's no-op
    model) gets no share. A peak that some row beats was not the ceiling of that arithmetic
    on this machine, so no row gets a share of it and a share never exceeds 100%: the kinds
    of such peaks are returned.
    """
    for row in rows:
        kind = arithmetic.get(row.system)
        peak = peaks.get(kind) if kind else None
        row.peak_kind = kind if peak else None
        if peak and peak["gflops"] > 0:
            row.fraction_of_peak = row.images_per_s.median * flops / (peak["gflops"] * 1e9)
    beaten = sorted({r.peak_kind for r in rows if r.peak_kind and (r.fraction_of_peak or 0) > 1})
    for row in rows:
        if row.peak_kind in beaten:
            row.fraction_of_peak = row.peak_kind = None
    return beaten
