"""The eager variant is chosen by measurement: the probe keeps the fastest of what it timed."""

from __future__ import annotations

import numpy as np
import pytest

from fstore.benchmarks import variants
from fstore.benchmarks.eager import CANDIDATES, VARIANTS


@pytest.mark.parametrize(
    "timings, chosen",
    [
        ({"fp32": 0.50, "fp32-cl": 0.40, "bf16-autocast-cl": 0.45, "bf16-cl": 0.30}, "bf16-cl"),
        # the AVX2 machine: bf16 autocast 0.16x eager fp32
        ({"fp32": 0.40, "fp32-cl": 0.42, "bf16-autocast-cl": 2.50}, "fp32"),
        ({"fp32-cl": 0.2, "fp32": 0.2}, "fp32-cl"),  # a tie keeps the first given
    ],
)
def test_the_fastest_variant_is_chosen(timings: dict[str, float], chosen: str) -> None:
    assert variants.fastest(timings) == chosen


def test_nothing_measured_is_an_error() -> None:
    with pytest.raises(ValueError, match="no variant"):
        variants.fastest({})


def test_every_candidate_is_a_known_variant_and_fp32_is_one() -> None:
    for device, names in CANDIDATES.items():
        assert names[0] == "fp32" and set(names) <= set(VARIANTS), device


class Scripted:
    """A backend whose timed runs take the seconds ``time_batches`` is told to report."""

    def __init__(self, name: str, made: list[str]) -> None:
        self.name = name
        made.append(name)

    def load(self) -> None:
        pass

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"fc7": np.zeros((len(batch), 2), np.float32)}

    def synchronize(self) -> None:
        pass

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "provider": "cpu", "precision": "fp32"}


def test_the_probe_times_each_candidate_interleaved_and_keeps_the_fastest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    per_run = {"fp32": [9.0, 1.0, 1.0, 1.0], "fp32-cl": [9.0, 0.8, 0.9, 5.0], "bf16-cl": [9.0] * 4}
    calls: list[str] = []

    def fake_time(backend, batch, iterations):
        assert iterations == 1
        calls.append(backend.name)
        return per_run[backend.name][calls.count(backend.name) - 1] * len(batch)

    monkeypatch.setattr(variants, "time_batches", fake_time)
    made: list[str] = []
    batch = np.zeros((2, 8, 8, 3), np.uint8)
    probe = variants.probe_variants(
        lambda name: Scripted(name, made), ("fp32", "fp32-cl", "bf16-cl"), batch, settle=0
    )
    assert made == ["fp32", "fp32-cl", "bf16-cl"]
    assert calls[:3] == made  # the untimed first runs
    assert calls[3:6] == made and calls[6:9] == ["fp32-cl", "bf16-cl", "fp32"]  # rotated
    # medians of the 3 timed rounds, per image: fp32 1.0, fp32-cl 0.9, bf16-cl 9.0
    assert probe.seconds_per_image == pytest.approx({"fp32": 1.0, "fp32-cl": 0.9, "bf16-cl": 9.0})
    assert (probe.chosen, probe.batch_size, probe.rounds) == ("fp32-cl", 2, 3)
