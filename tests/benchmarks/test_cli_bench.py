"""``fstore bench`` through click: a tiny end-to-end smoke run, errors, and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fstore.benchmarks.config import FULL, BenchConfig
from fstore.benchmarks.eager import VARIANTS, candidates
from fstore.cli.bench import bench

#: The smallest real run: VGG16 to pool5 at 32x32 on 8 pictures, every view.
TINY = (
    "--synthetic 8 --batch-sizes 1,2 --input-size 32 --weights random --layer pool5 --repeats 2 "
    "--warmup 1 --e2e-repeats 1 --workers 1 --calibration-count 4 --gemm-size 64 "
    "--peak-seconds 0.01 --memory off --quiet"
).split()
#: Stages whose time the run reports (export, quantization and GEMM peaks among them).
TIMED_STAGES = (
    "images",
    "export fp32",
    "int8 variant",
    "eager weights",
    "eager variant probe",
    "GEMM peaks",
    "model view",
    "e2e view",
    "pipeline view",
    "fidelity",
)


def test_importing_the_command_imports_nothing_heavy() -> None:
    code = (
        "import sys, fstore.cli.bench; "
        "print([m for m in ('torch', 'onnxruntime', 'h5py', 'sklearn', 'onnx') "
        "if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_tiny_bench_writes_three_outputs(bench_model, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "bench"
    result = CliRunner().invoke(bench, TINY + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"bench.md", "bench.json", "bench.png"}
    data = json.loads((out / "bench.json").read_text())
    systems = ["eager-fp32", "eager-best", "ort-fp32", "ort-int8"]
    assert [s["id"] for s in data["systems"]] == systems + [
        "loader-noop",
        "build-noop",
        "build-noop-norm",
    ]
    model = {(r["system"], r["batch_size"]): r for r in data["model_rows"]}
    assert set(model) == {(s, b) for s in systems for b in (1, 2)}
    for (_, batch), row in model.items():
        base = model[("eager-fp32", batch)]["images_per_s"]["median"]
        assert row["ratio"] == pytest.approx(row["images_per_s"]["median"] / base)
        assert len(row["batch_seconds"]) == 2
    e2e = {r["system"]: r for r in data["e2e_rows"]}
    assert set(e2e) == set(systems) and all(r["images"] == 8 for r in e2e.values())
    pipeline = {r["system"]: r for r in data["pipeline_rows"]}
    assert set(pipeline) == {"loader-noop", "build-noop", "build-noop-norm"}
    assert all(r["images"] == 8 and r["images_per_s"]["min"] > 0 for r in pipeline.values())
    assert data["fidelity"]["e2e_agreement"]["images"] == 8
    assert data["fidelity"]["e2e_agreement"]["mean_cosine"] > 0.9999
    assert data["fidelity"]["model_view"]["ort-fp32"]["mean_cosine"] > 0.9999
    assert data["fidelity"]["model_view"]["ort-int8"]["mean_cosine"] > 0.99
    assert data["models"]["fp32"] == str(bench_model.path)
    assert data["macs_per_image"] > 0 and data["peaks"]["fp32"]["gflops"] > 0
    assert any("CUDA path untested" in n for n in data["notes"])
    assert "ort-int8" in result.output and "x DataLoader" in result.output
    assert "wrote" in result.output
    probe, timed = data["eager_probe"], candidates("cpu")  # no bf16 under FSTORE_CPU=avx2
    assert probe["chosen"] in timed and set(probe["seconds_per_image"]) == set(timed)
    assert probe["seconds_per_image"][probe["chosen"]] == min(probe["seconds_per_image"].values())
    best = next(s for s in data["systems"] if s["id"] == "eager-best")
    assert best["arithmetic"] == VARIANTS[probe["chosen"]].dtype
    assert best["arithmetic"] in data["peaks"]  # the peak of the dtype actually used
    shares = [r["fraction_of_peak"] for r in data["model_rows"] + data["e2e_rows"]]
    assert all(f is None or 0 < f <= 1 for f in shares)
    stages = {s["name"]: s for s in data["stages"]}
    assert set(TIMED_STAGES) <= set(stages)
    assert stages["export fp32"]["cached"] is True  # the session's fixture exported it
    assert isinstance(stages["int8 variant"]["cached"], bool)
    assert all(s["seconds"] >= 0 for s in data["stages"])
    assert sum(s["seconds"] for s in data["stages"]) <= data["seconds"]
    time_line = next(line for line in result.output.splitlines() if line.startswith("time: "))
    for name in TIMED_STAGES:
        assert f"{name}: " in time_line
    assert "## Where the time went" in (out / "bench.md").read_text()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--synthetic", "4", "--images", "."], 2, "not both"),
        (["--batch-sizes", "1,x"], 2, "Invalid value for '--batch-sizes'"),
        (["--synthetic", "2", "--precision", "fp8", "--input-size", "32"], 1, "unknown precision"),
        (["--synthetic", "2", "--views", "model,speed"], 1, "unknown view 'speed'"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0]  # one line, after click's usage lines


def test_the_command_hands_the_library_one_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fstore.benchmarks import harness
    from fstore.benchmarks.config import BenchConfig
    from fstore.errors import FstoreError
    from fstore.runtime.weights_source import WeightsSource

    seen = []

    def fake_run(config):
        seen.append(config)
        raise FstoreError("no images: pass --images DIR")

    monkeypatch.setattr(harness, "run_bench", fake_run)
    args = ["--views", "pipeline", "--images", str(tmp_path), "--workers", "3", "--quiet"]
    result = CliRunner().invoke(bench, args + ["--batch-sizes", "2,4", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no images: pass --images DIR"
    assert seen == [
        BenchConfig(
            views=("pipeline",),
            images=tmp_path,
            workers=3,
            batch_sizes=(2, 4),
            weights=WeightsSource("imagenet"),
        )
    ]


def _help_defaults(option: str) -> tuple[str, str]:
    """The ``[default: X; --full: Y]`` that ``--help`` shows for ``option``."""
    text = " ".join(CliRunner().invoke(bench, ["--help"]).output.split())
    after = text.split("Options:", 1)[1].split(f"{option} ", 1)[1]  # not the examples above
    quick, full = after.split("[default: ", 1)[1].split("]", 1)[0].split("; --full: ")
    return quick, full


@pytest.mark.parametrize(
    "option, field",
    [
        ("--synthetic", "synthetic"),
        ("--batch-sizes", "batch_sizes"),
        ("--repeats", "repeats"),
        ("--warmup", "warmup"),
        ("--e2e-repeats", "e2e_repeats"),
        ("--memory", "memory"),
    ],
)
def test_the_quick_defaults_are_what_help_says(
    option: str, field: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fstore.benchmarks import harness

    seen = []
    monkeypatch.setattr(harness, "run_bench", lambda config: seen.append(config) or 1 / 0)
    for args in ([], ["--full"]):
        result = CliRunner().invoke(bench, args + ["--quiet", "--out", str(tmp_path)])
        assert isinstance(result.exception, ZeroDivisionError)
    quick, full = (getattr(config, field) for config in seen)

    def shown(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    assert _help_defaults(option) == (shown(quick), shown(full))
    assert quick == getattr(BenchConfig(), field) and full == FULL[field]


def test_the_quick_run_is_smaller_than_the_full_one_and_options_still_win(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fstore.benchmarks import harness

    seen = []
    monkeypatch.setattr(harness, "run_bench", lambda config: seen.append(config) or 1 / 0)
    for args in ([], ["--full"], ["--full", "--repeats", "2", "--memory", "off"]):
        CliRunner().invoke(bench, args + ["--quiet", "--out", str(tmp_path)])
    quick, full, mixed = seen
    assert quick.synthetic * quick.repeats < full.synthetic * full.repeats
    assert max(quick.batch_sizes) < max(full.batch_sizes)
    assert (quick.memory, quick.remeasure_peaks) == ("off", False)
    assert (full.memory, full.remeasure_peaks) == ("subprocess", True)
    assert (mixed.repeats, mixed.memory, mixed.synthetic) == (2, "off", full.synthetic)
