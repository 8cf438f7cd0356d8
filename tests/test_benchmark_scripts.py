"""The developer benchmarks in scripts/benchmarks/ still run against the library they time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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
