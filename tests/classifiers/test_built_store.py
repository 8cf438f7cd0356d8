"""On a tiny store built by ``fstore build`` (VGG16, random weights, 32x32): train, save, and
classify images through the recorded model and preprocessing.

Marked ``slow``: exporting and loading the real VGG16 (fc6 alone holds 102 M weights) takes
about half a minute on 2 cores; the export is shared with the feature-store tests in a full run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import make_image_folder

from fstore.cli.classifiers import classify, train

# each builds a store or a report: seconds to minutes (pytest -m slow)
pytestmark = pytest.mark.slow


@pytest.fixture
def built_store(tmp_path: Path, config_for) -> Path:
    from fstore.pipeline.model import build_store

    images = tmp_path / "images"
    for part, count in (("train", 4), ("test", 2)):
        make_image_folder(images, {"alpha": count, "beta": count}, seed=len(part), prefix=part)
    config = config_for(images, tmp_path / "built.h5")
    build_store(config)
    return config.store


@pytest.mark.slow
def test_train_and_classify_through_the_stores_model(built_store, tmp_path):
    from fstore.classifiers.persist import load_classifier
    from fstore.store import load_features

    out = tmp_path / "run"
    result = CliRunner().invoke(
        train, ["svm", "--store", str(built_store), "--C", "1", "--cv", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    clf = load_classifier(out / "classifier.skops")
    fs = load_features(built_store, "fc7")
    assert clf.layer == "fc7" and clf.model_sha256 == fs.provenance["model_sha256"]

    # Classifying the stored images again must give what the classifier says on their stored
    # features: same model, same preprocessing, same features.
    images = sorted((tmp_path / "images").rglob("*.jpg"))
    expected = dict(zip([str(k) for k in fs.keys], clf.predict_features(fs), strict=True))
    result = CliRunner().invoke(
        classify, [*map(str, images), "--classifier", str(out / "classifier.skops")]
    )
    assert result.exit_code == 0, result.output
    got = dict(line.split("\t")[:2] for line in result.output.splitlines())
    assert len(got) == len(images)
    for path in images:
        key = path.relative_to(tmp_path / "images").as_posix()
        assert got[str(path)] == clf.classes[expected[key]], key
