"""``predict``: top-k ImageNet classes through ONNX Runtime, checked against eager torchvision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from inspection_helpers import eager_input, relative_error, write_image

from fstore.errors import ModelError
from fstore.inspection.prediction import PredictFailure, Prediction, Predictor, find_images, predict
from fstore.runtime.weights_source import WeightsSource


@pytest.fixture(scope="module")
def predictor(small_model) -> Predictor:
    return Predictor.load(small_model.path, "cpu")


def eager_logits(model, path: Path) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(eager_input(path))).numpy()[0]


def test_top_k_sorted_and_probabilities_sum_to_one(predictor, images):
    report = predict(images, predictor, top=7, batch_size=2)  # 2 batches: one full, one partial
    assert [p.path for p in report.predictions] == images
    assert report.failures == ()
    for pred in report.predictions:
        probs = pred.probabilities
        assert probs.shape == (1000,)
        assert abs(float(probs.astype(np.float64).sum()) - 1.0) < 1e-5
        assert (probs >= 0).all()
        top = [s.probability for s in pred.top]
        assert len(pred.top) == 7 and top == sorted(top, reverse=True)
        assert [s.rank for s in pred.top] == list(range(1, 8))
        assert len({s.index for s in pred.top}) == 7
        assert pred.top[0].index == int(np.argmax(probs))
        # nothing outside the top k beats the k-th
        rest = np.delete(probs, [s.index for s in pred.top])
        assert rest.max() <= top[-1]
        for score in pred.top:
            assert score.probability == pytest.approx(float(probs[score.index]))
            assert score.name == predictor.classes[score.index]


def test_class_names_equal_torchvision(predictor):
    pytest.importorskip("torchvision")
    from torchvision.models import VGG16_Weights

    assert predictor.classes == tuple(VGG16_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(predictor.classes) == 1000


def test_ort_logits_and_probabilities_equal_eager(predictor, images, eager_vgg16):
    import torch

    report = predict(images, predictor, top=5)
    for pred in report.predictions:
        expected = eager_logits(eager_vgg16, pred.path)
        assert pred.logits is not None
        assert relative_error(pred.logits, expected) <= 1e-4
        np.testing.assert_allclose(pred.logits, expected, rtol=0, atol=1e-4)
        expected_prob = torch.softmax(torch.from_numpy(expected).double(), 0).numpy()
        np.testing.assert_allclose(pred.probabilities, expected_prob, rtol=1e-4, atol=0)
        assert pred.top[0].index == int(np.argmax(expected))


def test_logits_only_model_gets_softmax(predictor, images):
    logits_only = Predictor(
        replace(predictor.backend, outputs=("logits",)), predictor.path, predictor.info
    )
    a = predict(images[:1], predictor).predictions[0]
    b = predict(images[:1], logits_only).predictions[0]
    np.testing.assert_allclose(b.probabilities, a.probabilities, rtol=1e-5, atol=1e-9)
    assert [s.index for s in b.top] == [s.index for s in a.top]


def test_find_images_walks_folders(tmp_path):
    root = tmp_path / "walk"
    wanted = [
        write_image(root / "x" / "one.JPG", 1),
        write_image(root / "two.png", 2),
        write_image(root / "y" / "z" / "three.webp", 3),
    ]
    (root / "notes.txt").write_text("not an image")
    write_image(root / ".hidden" / "four.jpg", 4)
    (tmp_path / "empty").mkdir()
    found = find_images([root, tmp_path / "empty", tmp_path / "missing.jpg"])
    assert found[:3] == sorted(wanted)
    assert [(f.path.name, f.reason) for f in found[3:]] == [
        ("empty", "folder holds no image files"),
        ("missing.jpg", "no such file or folder"),
    ]


def _bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    good = write_image(folder / "good.jpg", 5, (80, 60))
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    text = folder / "text.png"
    text.write_text("hello, I am not a PNG")
    return {"empty": empty, "truncated": truncated, "text": text, "good": good}


def test_bad_files_reported_rest_predicted(predictor, tmp_path):
    bad = _bad_files(tmp_path / "mixed")
    report = predict([tmp_path / "mixed", tmp_path / "nope.jpg"], predictor, top=3)
    kinds = {item.path.name: type(item) for item in report.items}
    assert kinds == {
        "empty.jpg": PredictFailure,
        "good.jpg": Prediction,
        "text.png": PredictFailure,
        "truncated.jpg": PredictFailure,
        "nope.jpg": PredictFailure,
    }
    reasons = {f.path.name: f.reason for f in report.failures}
    assert reasons["empty.jpg"] == "empty file"
    assert "not an image" in reasons["text.png"]
    assert reasons["nope.jpg"] == "no such file or folder"
    assert [p.path for p in report.predictions] == [bad["good"]]


def test_cli_json_reports_bad_files_and_exits_zero(cli, small_model, tmp_path):
    bad = _bad_files(tmp_path / "mixed")
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(bad["empty"]),
            str(bad["good"]),
            str(bad["text"]),
            "--top",
            "3",
            "--model",
            str(small_model.path),
            "--provider",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [Path(item["path"]).name for item in data["images"]] == [
        "empty.jpg",
        "good.jpg",
        "text.png",
    ]
    assert data["images"][0]["error"] == "empty file"
    assert "not an image" in data["images"][2]["error"]
    top = data["images"][1]["top"]
    assert [t["rank"] for t in top] == [1, 2, 3]
    assert all({"index", "name", "probability"} <= set(t) for t in top)
    assert data["predicted"] == 1 and data["failed"] == 2
    assert "skipped" in result.stderr and "empty.jpg: empty file" in result.stderr


@pytest.mark.slow
def test_cli_text_output_and_all_bad_exit_status(cli, small_model, images, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(
        cli,
        [
            "predict",
            str(images[0]),
            "--top",
            "2",
            "--model",
            str(small_model.path),
            "--provider",
            "cpu",
        ],
    )
    assert ok.exit_code == 0, ok.output
    lines = ok.stdout.splitlines()
    assert lines[0] == str(images[0])
    assert len(lines) == 3
    assert lines[1].strip().startswith("1.") and lines[2].strip().startswith("2.")
    assert "(class " in lines[1]

    empty = tmp_path / "only_bad.png"
    empty.write_bytes(b"")
    bad = runner.invoke(
        cli, ["predict", str(empty), "--model", str(small_model.path), "--provider", "cpu"]
    )
    assert bad.exit_code == 1
    assert "no image could be predicted" in bad.stderr
    assert "Traceback" not in bad.output


def test_model_without_logits_is_a_one_line_error(cli, conv1_model, images):
    with pytest.raises(ModelError, match="no 'logits' or 'prob' output"):
        Predictor.load(conv1_model)
    result = CliRunner().invoke(cli, ["predict", str(images[0]), "--model", str(conv1_model)])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("Error:") and len(message.splitlines()) == 1


@pytest.mark.slow
def test_predict_and_cli_module_need_no_torch(small_model, conv1_model, images, isolated_cache):
    """A given model (predict) and a cached one with an alias (activations) run without torch."""
    script = f"""
import sys
import fstore.cli.inspection
heavy = [m for m in ("torch", "onnxruntime", "h5py", "sklearn", "matplotlib") if m in sys.modules]
assert not heavy, heavy
from click.testing import CliRunner
from fstore.cli.options import FstoreGroup
from fstore.cli.inspection import activations, predict
cli = FstoreGroup("fstore", commands=[predict, activations])
r = CliRunner().invoke(cli, ["predict", {str(images[0])!r}, "--model", {str(small_model.path)!r},
                             "--provider", "cpu"])
assert r.exit_code == 0, r.output
r = CliRunner().invoke(cli, ["activations", {str(images[1])!r}, "--weights", "random",
                             "--input-size", "32", "--channels", "4", "--provider", "cpu",
                             "-o", {str(images[1].with_name("maps.png"))!r}])
assert r.exit_code == 0, r.output
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    env = {**os.environ, "FSTORE_CACHE": str(isolated_cache)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
    assert images[1].with_name("maps.png").is_file()


@pytest.mark.slow
def test_full_size_predict_through_cache_equals_eager(images, eager_vgg16):
    """224x224 end to end: ``ensure_model(("logits", "prob"))``, then ORT against eager."""
    import torch

    from fstore.images.preprocess import Preprocessing

    predictor = Predictor.for_weights(WeightsSource("random", seed=0), Preprocessing(), "cpu")
    assert predictor.preprocessing == Preprocessing()
    report = predict(images, predictor, top=5)
    for pred in report.predictions:
        x = torch.from_numpy(eager_input(pred.path, Preprocessing()))
        with torch.inference_mode():
            expected = eager_vgg16(x).numpy()[0]
        assert relative_error(pred.logits, expected) <= 1e-4
        assert abs(float(pred.probabilities.sum()) - 1.0) < 1e-5
