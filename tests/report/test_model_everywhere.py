"""A model from elsewhere (no fstore metadata) works in ``predict`` and ``classify`` too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SMALL

# each builds a store or a report: seconds to minutes (pytest -m slow)
pytestmark = pytest.mark.slow

SMALL_OPTIONS = ["--size", "32", "--resize", "37"]


def test_classify_applies_a_classifier_trained_on_a_model_store(
    split_folder: Path, external_model: Path, tmp_path: Path
):
    from fstore.classifiers.outputs import write_run
    from fstore.classifiers.predict import classify_images
    from fstore.classifiers.svm import train_svm
    from fstore.classifiers.svm_options import SvmOptions
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store
    from fstore.store import load_features

    store = tmp_path / "s.h5"
    build_store(
        BuildConfig(
            store=store,
            images=split_folder,
            model=external_model,
            preprocessing=SMALL,
            layers=("fc7",),
            provider="cpu",
        )
    )
    fs = load_features(store, "fc7")
    run = train_svm(fs, SvmOptions(C=(1.0,), cv=2))
    saved = write_run(run, tmp_path / "svm")["classifier"]
    test = fs.test
    result = classify_images([split_folder / k for k in test.keys], saved)
    expected = run.fits[0].model.predict(test.X)
    assert [p.label for p in result.predictions] == [fs.classes[i] for i in expected]


def test_predict_names_a_1000_way_output(external_model: Path, split_folder: Path, tmp_path: Path):
    from scipy.special import softmax

    from fstore.cli import cli
    from fstore.export.imagenet_classes import IMAGENET_CLASSES
    from fstore.inspection.featuremaps import read_image
    from fstore.runtime.session import OrtBackend

    image = sorted((split_folder / "test" / "coast").iterdir())[0]
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(image),
            "--model",
            str(external_model),
            *SMALL_OPTIONS,
            "--classes",
            "imagenet",
            "--top",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    import json

    top = json.loads(result.stdout)["images"][0]["top"]
    _, array = read_image(image, SMALL)
    logits = OrtBackend.open(external_model, "cpu", outputs=("logits",)).run(array[None])
    expected = softmax(logits["logits"][0].astype(np.float64))
    order = np.argsort(-expected)[:3]
    assert [t["index"] for t in top] == order.tolist()
    assert [t["name"] for t in top] == [IMAGENET_CLASSES[i] for i in order]
    np.testing.assert_allclose([t["probability"] for t in top], expected[order], rtol=1e-5)

    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {i}\n" for i in range(1000)))
    named = CliRunner().invoke(
        cli,
        [
            "predict",
            str(image),
            "--model",
            str(external_model),
            *SMALL_OPTIONS,
            "--classes",
            str(names),
            "--top",
            "1",
        ],
    )
    assert f"class {order[0]} (class {order[0]})" in named.stdout
    names.write_text("a\nb\n")
    wrong = CliRunner().invoke(
        cli,
        [
            "predict",
            str(image),
            "--model",
            str(external_model),
            *SMALL_OPTIONS,
            "--classes",
            str(names),
        ],
    )
    assert wrong.exit_code == 1
    assert "1000 values but 2 class names" in wrong.output


def test_predict_asks_for_the_preprocessing_of_a_model_without_metadata(
    external_model: Path, split_folder: Path
):
    from fstore.cli import cli

    image = sorted((split_folder / "test" / "coast").iterdir())[0]
    result = CliRunner().invoke(cli, ["predict", str(image), "--model", str(external_model)])
    assert result.exit_code == 1
    assert "--size" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("text", ["1,2", "a,b,c"])
def test_bad_mean_is_one_line(text: str, external_model: Path, split_folder: Path):
    from fstore.cli import cli

    image = sorted((split_folder / "test" / "coast").iterdir())[0]
    args = ["predict", str(image), "--model", str(external_model), "--size", "32", "--mean", text]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--mean" in result.output and "Traceback" not in result.output
