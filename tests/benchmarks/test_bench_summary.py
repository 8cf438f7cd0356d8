"""The three outputs of a benchmark, written from a run of fake systems."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fstore.benchmarks import statistics as st
from fstore.benchmarks import systems as sy
from fstore.benchmarks import views
from fstore.benchmarks.result import BenchResult, Stage, evaluate_targets
from fstore.benchmarks.summary import FILES, markdown, write_report


class Fake:
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def load(self) -> None:
        pass

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {"fc7": batch.reshape(len(batch), -1)[:, :8] * self.scale}

    def synchronize(self) -> None:
        pass

    def describe(self) -> dict[str, str]:
        return {"name": "fake", "provider": "cpu", "precision": "fp32"}


class Images:
    count = 6


@pytest.fixture
def result(tmp_path: Path) -> BenchResult:
    systems = sy.make_systems("cpu", ("fp32", "int8"), best="bf16-cl")
    pipeline = sy.pipeline_systems(2)
    inputs = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    loaders = {s.id: (lambda i=i: Fake(1.0 + 0.001 * i)) for i, s in enumerate(systems)}
    model_rows, feats = views.model_view(
        systems, loaders, inputs, batch_sizes=(1, 4), repeats=2, warmup=1, min_images=4, settle=0
    )
    runners = {
        s.id: (
            lambda out, images: {
                "decode_seconds": 0.5,
                "inference_seconds": 1.0,
                "write_seconds": 0.1,
            }
        )
        for s in systems
    }
    e2e_rows, _ = views.whole_runs(
        systems, runners, Images(), views.Rounds("e2e", 4, 2, tmp_path, settle=0)
    )
    pipeline_rows, _ = views.whole_runs(
        pipeline,
        {s.id: (lambda out, images: {"write_seconds": 0.1}) for s in pipeline},
        Images(),
        views.Rounds("pipeline", 4, 2, tmp_path, settle=0),
    )
    result = BenchResult(
        started="2026-01-01T00:00:00+00:00",
        seconds=3.0,
        config={
            "batch_sizes": [1, 4],
            "repeats": 2,
            "warmup": 1,
            "e2e_repeats": 2,
            "e2e_batch_size": 4,
            "threads": 2,
            "workers": 2,
            "weights": "random:seed=0",
        },
        machine={
            "cpu": "Test CPU",
            "cores": 2,
            "usable_cores": 2,
            "cpu_flags": ["avx2"],
            "versions": {"onnxruntime": "1.0"},
            "load_average": [0.1, 0.1, 0.1],
        },
        provider="cpu",
        layer="fc7",
        input_size=32,
        macs_per_image=10**8,
        # far above what the fake systems reach, so that each row keeps its share
        peaks={
            "fp32": {"kind": "fp32", "gflops": 1e9, "how": "numpy matmul", "n": 64},
            "int8": {"kind": "int8", "gflops": 4e9, "how": "onnxruntime", "n": 64},
        },
        systems=systems + pipeline,
        images={"source": "synthetic", "count": 6, "description": "6 generated pictures (JPEG)"},
        models={},
        model_rows=model_rows,
        e2e_rows=e2e_rows,
        pipeline_rows=pipeline_rows,
        fidelity={
            "model_view": {s.id: {"mean_cosine": 1.0, "min_cosine": 0.999} for s in systems[1:]}
        },
        notes=["CUDA path untested"],
    )
    st.add_ratios(result.all_rows)
    arithmetic = {s.id: s.arithmetic for s in result.systems}
    st.add_fractions(result.all_rows, arithmetic, result.peaks, result.flops_per_image)
    result.targets = evaluate_targets(result)
    return result


def test_report_files_hold_every_system_and_batch(result: BenchResult, tmp_path: Path) -> None:
    paths = write_report(result, tmp_path / "out")
    assert {p.name for p in paths.values()} == set(FILES.values())
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    model = {(r["system"], r["batch_size"]): r for r in data["model_rows"]}
    vgg16 = [s for s in result.systems if s.arithmetic]  # the pipeline has none
    assert set(model) == {(s.id, b) for s in vgg16 for b in (1, 4)}
    for (_, batch), row in model.items():
        base = model[("eager-fp32", batch)]["images_per_s"]["median"]
        assert row["ratio"] == pytest.approx(row["images_per_s"]["median"] / base)
    assert len(data["e2e_rows"]) == len(vgg16)
    pipeline = {r["system"]: r for r in data["pipeline_rows"]}
    assert set(pipeline) == {"loader-noop", "build-noop", "build-noop-norm"}
    assert pipeline["loader-noop"]["ratio"] == 1.0
    assert pipeline["build-noop"]["images"] == pipeline["loader-noop"]["images"] == 6
    assert data["flops_per_image"] == 2 * 10**8
    text = paths["markdown"].read_text()
    for s in vgg16:
        for b in (1, 4):
            assert f"| {s.id} | {b} |" in text
    assert "## Input pipeline" in text and "| build-noop | 4 | 6 |" in text
    for title in ("## Model only", "## End to end", "## Fidelity", "## Targets", "## Notes"):
        assert title in text
    assert "Test CPU" in text and "fp32 GEMM peak: 1000000000.0 GFLOP/s" in text
    assert "CUDA path untested" in text and "## Targets" in text


def test_markdown_shows_ratios_and_fraction_of_peak(result: BenchResult) -> None:
    text = markdown(result)
    row = next(r for r in result.model_rows if r.system == "ort-int8" and r.batch_size == 4)
    assert f"{row.ratio:.2f}×" in text
    assert f"{100 * row.fraction_of_peak:.0f}% int8" in text


def test_markdown_shows_no_share_of_a_beaten_peak(result: BenchResult) -> None:
    result.peaks["int8"]["gflops"] = 1e-6
    arithmetic = {s.id: s.arithmetic for s in result.systems}
    beaten = st.add_fractions(result.all_rows, arithmetic, result.peaks, result.flops_per_image)
    assert beaten == ["int8"]
    text = markdown(result)
    row = next(line for line in text.splitlines() if line.startswith("| ort-int8 | 4 |"))
    assert "int8" not in row.split("|")[7] and "%" not in row.split("|")[7]
    shares = [int(v) for v in re.findall(r"\| (\d+)% (?:fp32|bf16|int8) \|", text)]
    assert shares and max(shares) <= 100


def test_nan_and_infinity_become_null(result: BenchResult, tmp_path: Path) -> None:
    result.model_rows[0].ratio = float("nan")
    result.model_rows[1].fraction_of_peak = float("inf")
    data = json.loads(write_report(result, tmp_path)["json"].read_text())
    assert data["model_rows"][0]["ratio"] is None
    assert data["model_rows"][1]["fraction_of_peak"] is None


def test_markdown_says_where_the_time_went(result: BenchResult) -> None:
    result.seconds = 10.0
    result.stages = [
        Stage("export fp32", 0.25, cached=True),
        Stage("int8 variant", 5.0, cached=False),
        Stage("GEMM peaks", 0.05, cached=True),
        Stage("model view", 2.0),
    ]
    text = markdown(result)
    section = text.split("## Where the time went", 1)[1].split("## Targets", 1)[0]
    assert "- export fp32: 0.2 s (from the cache)" in section
    assert "- int8 variant: 5.0 s (computed, now cached)" in section
    assert "- GEMM peaks: 0.1 s (from the cache)" in section
    assert "- model view: 2.0 s\n" in section
    assert "- other (machine facts, ratios): 2.7 s" in section and "- total: 10.0 s" in section
