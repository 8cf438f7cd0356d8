"""The developer benchmarks in scripts/benchmarks/ still run against the library they time."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_scale_benchmark_measures_a_small_store(tmp_path):
    scale = _load("scale")
    (point,) = scale.run([300], tmp_path)
    assert point.images == 300 and point.read_under_256_files == "right"
    assert point.files == 2 and point.build_images_per_second > 0  # 256 + 44 rows
    assert "| 300 |" in scale.table([point])


def test_no_developer_benchmark_is_inside_the_package():
    package = Path(__file__).resolve().parents[1] / "fstore"
    assert not list(package.rglob("scale.py")), "developer benchmarks live in scripts/benchmarks"
    assert {p.name for p in SCRIPTS.glob("*.py")} >= {"scale.py", "svm_speed.py", "decode_speed.py"}


def test_quality_scale_benchmark_runs_every_step_on_a_small_store(tmp_path):
    """All four steps in their own processes, on 3,000 simulated rows: the index finds the
    exact neighbours and the candidates' rates come for each number of cells."""
    pytest.importorskip("faiss")
    args = ["--rows", "3000", "--dim", "16", "--clusters", "20", "--shard-rows", "1000",
            "--nlist", "16", "--train-rows", "2000", "--queries", "20", "--exact-queries", "20",
            "--rate-queries", "300", "--candidate-nprobe", "4,1", "--skip", "none",
            "--work", str(tmp_path)]  # fmt: skip
    out = subprocess.run([sys.executable, str(SCRIPTS / "quality_scale.py"), *args],
                         capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(out.stdout[out.stdout.index("{\n") :])
    assert result["build"]["rows"] == 3000 and result["queries"]["recall_at_10"] >= 0.95
    assert set(result["rate"]["by_nprobe"]) == {"4", "1"}
    assert result["candidates"]["nprobe"] == 4 and result["candidates"]["pairs"] > 0
    assert len(result["cli_seconds"]) == 2
