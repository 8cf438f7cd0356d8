"""``--exclude-leaks``: test images with a copy in the training split leave the test score,
nothing else changes, and the duplicates behind it are cached beside the store by its rows."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from quality_synthetic import photo

from fstore.cli import cli

# each test builds a small store (about 10 s on the shared 2-core machine)
pytestmark = pytest.mark.slow


@pytest.fixture
def leaky_store(tmp_path, config_for):
    """2 classes of 6 training and 3 test photos; two test images are byte copies of
    training images (one of another class)."""
    from fstore.pipeline.model import build_store

    root = tmp_path / "images"
    for s, (split, count) in enumerate((("train", 6), ("test", 3))):
        for c, name in enumerate(("alpha", "beta")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                photo(100 * s + 10 * c + i).save(root / split / name / f"p{i}.jpg", quality=90)
    shutil.copy(root / "train/alpha/p5.jpg", root / "test/alpha/copy.jpg")
    shutil.copy(root / "train/alpha/p1.jpg", root / "test/beta/copy.jpg")
    build_store(config_for(root, layers=("pool5",)))
    return tmp_path / "s.h5"


LEAKED = ("test/alpha/copy.jpg", "test/beta/copy.jpg")


def test_exclude_leaks_drops_only_the_leaked_test_rows_and_is_cached(leaky_store, monkeypatch):
    from fstore.quality import duplicates as module
    from fstore.quality.leaks import exclude_leaks
    from fstore.store import load_features

    fs = load_features(leaky_store, "pool5")
    result = exclude_leaks(fs, leaky_store, "pool5")
    assert result.excluded == LEAKED
    kept = result.features
    assert sorted(kept.keys[kept.split == "train"]) == sorted(fs.keys[fs.split == "train"])
    assert sorted(kept.keys[kept.split == "test"]) == sorted(
        set(fs.keys[fs.split == "test"]) - set(LEAKED)
    )
    entries = list((leaky_store.parent / "s.h5.d" / "quality").glob("duplicates-*.json"))
    assert len(entries) == 1

    def no_second_run(*args, **kwargs):
        raise AssertionError("the cached duplicates were computed again")

    monkeypatch.setattr(module, "duplicates", no_second_run)
    assert exclude_leaks(fs, leaky_store, "pool5").excluded == LEAKED


def test_cache_key_follows_the_rows(leaky_store, tmp_path, config_for):
    """A changed image gives another entry: the old result is not served."""
    from fstore.pipeline.model import build_store
    from fstore.quality.cache import entry
    from fstore.quality.duplicates import DuplicateOptions

    before = entry(leaky_store, "duplicates", "pool5", DuplicateOptions())
    root = tmp_path / "images"
    photo(999).save(root / "test/beta/copy.jpg", quality=90)  # no longer a copy
    build_store(config_for(root, layers=("pool5",)))
    assert entry(leaky_store, "duplicates", "pool5", DuplicateOptions()) != before
    from fstore.quality.leaks import leaked_test_keys

    assert leaked_test_keys(leaky_store, "pool5") == ("test/alpha/copy.jpg",)


def test_train_svm_exclude_leaks_scores_the_same_model_without_them(leaky_store, tmp_path):
    from fstore.classifiers.svm import train_svm
    from fstore.classifiers.svm_options import SvmOptions
    from fstore.store import load_features

    args = ["train", "svm", "--store", str(leaky_store), "--layer", "pool5", "--C", "1",
            "--cv", "2", "--json"]  # fmt: skip
    full = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    cut = CliRunner().invoke(cli, [*args, "--exclude-leaks", "--out", str(tmp_path / "b")])
    assert full.exit_code == 0 and cut.exit_code == 0, cut.output
    assert "2 leaked test images left out" in cut.stderr
    full_fit, cut_fit = (json.loads(r.stdout)["fits"][0] for r in (full, cut))
    assert full_fit["n_test"] - cut_fit["n_test"] == 2
    assert full_fit["n_train"] == cut_fit["n_train"]
    fs = load_features(leaky_store, "pool5")
    reference = train_svm(fs.subset(~np.isin(fs.keys, LEAKED)), SvmOptions(C=(1.0,), cv=2))
    assert cut_fit["accuracy"] == reference.accuracy_mean


def test_exclude_leaks_with_random_splits_is_one_line(leaky_store):
    result = CliRunner().invoke(cli, ["train", "svm", "--store", str(leaky_store), "--layer",
                                      "pool5", "--exclude-leaks", "--splits", "2"])  # fmt: skip
    assert result.exit_code == 1
    assert "--exclude-leaks applies to the store's train/test split" in result.output
    assert "Traceback" not in result.output
