"""GEMM peaks: measured per arithmetic, over every route, and cached beside the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fstore.benchmarks import peaks

pytest.importorskip("torch")


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FSTORE_CACHE", str(tmp_path))
    return tmp_path


def test_peaks_are_measured_per_arithmetic(own_cache: Path) -> None:
    found = peaks.gemm_peaks("cpu", n=64, seconds=0.01, threads=1, kinds=("fp32", "bf16", "int8"))
    assert set(found) == {"fp32", "bf16", "int8"}
    assert all(p.gflops > 0 and p.n == 64 and not p.from_cache for p in found.values())
    assert found["bf16"].how in ("torch.mm", "torch 1x1 conv2d")
    assert found["int8"].how.startswith("onnxruntime MatMulInteger (u8 x ")
    assert found["fp32"].measured and found["fp32"].load is not None


def test_the_bf16_peak_is_the_best_of_its_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow torch.mm fallback must not set the ceiling when convolutions run faster."""
    routes = [(0.3e9, "torch.mm"), (40e9, "torch 1x1 conv2d")]
    monkeypatch.setattr(peaks, "_torch_routes", lambda n, seconds, dtype, device: routes)
    peak = peaks.measure_peak("bf16", "cpu", 64, 0.01, 1)
    assert (peak.gflops, peak.how) == (pytest.approx(40.0), "torch 1x1 conv2d")


def test_cached_peaks_are_reused_and_a_remeasure_keeps_the_higher(
    own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rates = iter([50.0, 20.0, 80.0, 10.0])
    measured: list[str] = []

    def fake_measure(kind, device, n, seconds, threads):
        measured.append(kind)
        return peaks.Peak(kind, next(rates), "fake", n, measured="now", load=1.0)

    monkeypatch.setattr(peaks, "measure_peak", fake_measure)
    first = peaks.gemm_peaks("cpu", n=64, threads=1, kinds=("fp32",))["fp32"]
    assert (first.gflops, first.from_cache) == (50.0, False)
    assert (own_cache / peaks.CACHE_FILE).is_file()
    again = peaks.gemm_peaks("cpu", n=64, threads=1, kinds=("fp32",))["fp32"]
    assert (again.gflops, again.from_cache, measured) == (50.0, True, ["fp32"])
    lower = peaks.gemm_peaks("cpu", n=64, threads=1, kinds=("fp32",), remeasure=True)["fp32"]
    assert (lower.gflops, lower.from_cache) == (50.0, True)  # 20 measured, 50 kept
    higher = peaks.gemm_peaks("cpu", n=64, threads=1, kinds=("fp32",), remeasure=True)["fp32"]
    assert (higher.gflops, higher.from_cache) == (80.0, False)
    (entry,) = json.loads((own_cache / peaks.CACHE_FILE).read_text()).values()
    assert entry["gflops"] == 80.0
    other = peaks.gemm_peaks("cpu", n=128, threads=1, kinds=("fp32",))["fp32"]
    assert (other.gflops, other.from_cache) == (10.0, False)  # another side, another peak


def test_the_key_tells_kinds_threads_and_sizes_apart() -> None:
    base = peaks.cache_key("fp32", "cpu", 2048, 2)
    assert base == peaks.cache_key("fp32", "cpu", 2048, 2)
    others = [("bf16", "cpu", 2048, 2), ("fp32", "cpu", 1024, 2), ("fp32", "cpu", 2048, 1)]
    assert base not in {peaks.cache_key(*o) for o in others}
