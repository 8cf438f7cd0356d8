"""The pipeline view: the input side of fstore build and of the eager DataLoader, no model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_the_no_op_onnx_model_pools_each_channel(tmp_path: Path) -> None:
    import onnxruntime as ort

    from fstore.benchmarks.pipeline import NOOP_INPUT, NOOP_OUTPUT, write_noop_model

    path = write_noop_model(tmp_path / "noop.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 20, 12)).astype(np.float32)
    (got,) = session.run([NOOP_OUTPUT], {NOOP_INPUT: x})
    np.testing.assert_allclose(got, x.mean(axis=(2, 3)), atol=1e-6)


def test_the_pixels_no_op_pools_raw_pixels_and_runs_unwrapped(tmp_path: Path) -> None:
    from fstore.benchmarks.pipeline import NOOP_OUTPUT, write_noop_model
    from fstore.images.preprocess import Preprocessing
    from fstore.runtime.session import OrtBackend

    path = write_noop_model(tmp_path / "noop.onnx", pixels=True)
    backend = OrtBackend.open(path, "cpu", preprocessing=Preprocessing())
    assert backend.input_spec is not None and backend.input_spec.mean == (0.0, 0.0, 0.0)
    x = np.random.default_rng(0).integers(0, 256, (3, 20, 12, 3), dtype=np.uint8)
    got = backend.run(x)[NOOP_OUTPUT]
    np.testing.assert_allclose(got, x.mean(axis=(1, 2)), rtol=1e-6)


def test_both_pipelines_write_the_same_features(
    bench_folder: Path, bench_prep, tmp_path: Path
) -> None:
    """fstore build (Pillow + NumPy) and the DataLoader (torchvision) read the same pictures."""
    from fstore.benchmarks.eager import LoaderOptions, read_eager_store
    from fstore.benchmarks.harness import Plan, pipeline_specs
    from fstore.benchmarks.inputs import prepare_images
    from fstore.benchmarks.pipeline import NOOP_OUTPUT
    from fstore.store import load_features

    plan = Plan("cpu", ("fp32",), 1, bench_prep, [], [])
    specs = pipeline_specs(plan, tmp_path, LoaderOptions(bench_prep, batch_size=4, workers=1))
    images = prepare_images(tmp_path, bench_prep, bench_folder)
    loader_details = specs["loader-noop"].run(tmp_path / "loader.h5", images)
    keys, feats = read_eager_store(tmp_path / "loader.h5")
    mean, std = np.asarray(bench_prep.mean), np.asarray(bench_prep.std)
    for system in ("build-noop-norm", "build-noop"):
        exact = dataclasses.replace(specs[system], decode="exact")  # torchvision's bytes
        build_details = exact.run(tmp_path / f"{system}.h5", images)
        assert build_details["images_computed"] == loader_details["images"] == 18
        fs = load_features(tmp_path / f"{system}.h5", NOOP_OUTPUT)
        assert list(fs.keys) == keys and fs.X.shape == (18, 3)
        # build-noop pools the raw pixels: normalise its means to compare
        got = fs.X if system == "build-noop-norm" else (fs.X / 255 - mean) / std
        np.testing.assert_allclose(got, feats[NOOP_OUTPUT], atol=1e-4)


def test_pipeline_view_alone_reports_both_systems_without_vgg16(
    bench_folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from fstore.benchmarks.config import BenchConfig
    from fstore.benchmarks.harness import run_bench
    from fstore.benchmarks.summary import markdown
    from fstore.export import weights_loader

    def no_vgg16(*args, **kwargs):
        raise AssertionError("the pipeline view must not load VGG16")

    monkeypatch.setattr(weights_loader, "load_vgg16", no_vgg16)
    config = BenchConfig(
        images=bench_folder,
        views=("pipeline",),
        input_size=32,
        e2e_repeats=2,
        workers=1,
        memory="off",
        provider="cpu",
    )
    result = run_bench(config, workdir=tmp_path)
    rows = {r.system: r for r in result.pipeline_rows}
    assert set(rows) == {"loader-noop", "build-noop", "build-noop-norm"}
    assert result.model_rows == [] and result.e2e_rows == [] and result.models == {}
    for row in rows.values():
        assert row.images == 18 and len(row.batch_seconds) == 2
        assert row.images_per_s.min > 0
    assert rows["loader-noop"].ratio == 1.0
    assert rows["build-noop"].ratio == pytest.approx(
        rows["build-noop"].images_per_s.median / rows["loader-noop"].images_per_s.median
    )
    assert rows["build-noop"].details["images_computed"] == 18
    assert rows["loader-noop"].details["images"] == 18
    assert [t["views"] for t in result.targets] == [["pipeline"], ["pipeline"]]
    text = markdown(result)
    assert "## Input pipeline" in text and "## Model only" not in text and "Fidelity" not in text
    assert "GFLOP per image" not in text and "Weights" not in text
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone
