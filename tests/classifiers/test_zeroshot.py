"""Zero-shot: the built-in mapping's ids, restriction of the softmax, sums per target class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fstore.classifiers.zeroshot as zeroshot_module
from fstore.classifiers.zeroshot import (
    BUILTIN_15SCENE,
    SCENE15_CLASSES,
    Mapping,
    load_mapping,
    restricted_probabilities,
    scene_key,
    zeroshot,
)
from fstore.errors import ClassifierError
from fstore.store import FeatureSet

#: The names the built-in mapping's comments give, checked against torchvision below.
EXPECTED_NAMES = {
    "coast": ["seashore", "sandbar", "promontory", "breakwater"],
    "mountain": ["alp", "volcano", "cliff"],
    "bedroom": ["four-poster", "studio couch", "wardrobe", "quilt", "crib", "pillow"],
    "opencountry": ["hay", "rapeseed", "worm fence", "valley"],
    "kitchen": ["stove", "microwave", "refrigerator", "dishwasher", "toaster", "plate rack"],
}


def test_builtin_ids_match_imagenet_names():
    from fstore.export.imagenet_classes import IMAGENET_CLASSES

    categories = IMAGENET_CLASSES  # checked against torchvision in tests/inspection
    source = Path(zeroshot_module.__file__).read_text()
    for target, ids in BUILTIN_15SCENE.items():
        for i in ids:
            # Every id's comment in the source names its torchvision category.
            assert f"{i},  # {categories[i]}\n" in source, (target, i, categories[i])
    for target, names in EXPECTED_NAMES.items():
        assert [categories[i] for i in BUILTIN_15SCENE[target]] == names


def test_builtin_mapping_leaves_classes_without_counterpart_out():
    assert set(BUILTIN_15SCENE) < set(SCENE15_CLASSES)
    assert {"forest", "tallbuilding"}.isdisjoint(BUILTIN_15SCENE)
    ids = [i for group in BUILTIN_15SCENE.values() for i in group]
    assert len(ids) == len(set(ids))


def test_restricted_softmax_and_sum():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 1000))
    groups = [(3, 7), (10,), (20, 21, 22)]
    probs = restricted_probabilities(logits, groups)
    kept = [3, 7, 10, 20, 21, 22]
    e = np.exp(logits[:, kept])
    p = e / e.sum(axis=1, keepdims=True)
    expected = np.stack([p[:, :2].sum(1), p[:, 2], p[:, 3:].sum(1)], axis=1)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_logits_outside_the_mapping_play_no_part():
    logits = np.zeros((1, 1000))
    logits[0, 500] = 100.0  # the full softmax's winner, but not mapped
    logits[0, 1] = 1.0
    probs = restricted_probabilities(logits, [(1,), (2,)])
    assert probs[0, 0] == pytest.approx(np.e / (np.e + 1))
    logits[0, 500] = -100.0
    np.testing.assert_allclose(restricted_probabilities(logits, [(1,), (2,)]), probs)


def test_summing_lets_several_moderate_classes_beat_one_strong():
    logits = np.zeros((1, 1000))
    logits[0, [1, 2, 3]] = 1.0  # target A: three ids at 1
    logits[0, 4] = 1.5  # target B: one id at 1.5, the single largest logit
    probs = restricted_probabilities(logits, [(1, 2, 3), (4,)])
    assert probs[0].argmax() == 0
    assert probs[0, 0] == pytest.approx(3 * np.e / (3 * np.e + np.e**1.5))


def logits_store(
    classes: tuple[str, ...], winners: dict[int, int], n: int = 4, split: str = "test"
) -> FeatureSet:
    """``n`` rows per class; row logits favour ``winners[class]`` (an ImageNet id)."""
    rng = np.random.default_rng(1)
    X, y = [], []
    for c in range(len(classes)):
        block = rng.normal(scale=0.1, size=(n, 1000))
        if c in winners:
            block[:, winners[c]] += 5.0
        X.append(block)
        y += [c] * n
    m = len(y)
    return FeatureSet(
        "logits",
        np.concatenate(X).astype(np.float32),
        np.asarray(y),
        np.array([f"k{i}" for i in range(m)], dtype=object),
        np.full(m, split, dtype=object),
        classes,
    )


def test_zeroshot_accuracy_over_covered_classes_and_uncovered_named():
    classes = ("MITcoast", "MITforest", "kitchen", "MITmountain")
    # coast rows look like "seashore", kitchen rows like "stove", mountain rows like "seashore"
    fs = logits_store(classes, {0: 978, 2: 827, 3: 978, 1: 970})
    result = zeroshot(fs)
    assert result.covered == ("MITcoast", "kitchen", "MITmountain")
    assert result.uncovered == ("MITforest",)
    assert result.n_skipped == 4 and result.evaluation.n_test == 12
    assert result.evaluation.per_class == (1.0, 1.0, 0.0)
    assert result.evaluation.accuracy == pytest.approx(8 / 12)
    assert result.evaluation.confusion[2, 0] == 4  # mountain taken for coast
    assert result.rows == "test"


def test_zeroshot_uses_all_rows_without_a_test_split():
    fs = logits_store(("coast", "kitchen"), {0: 978, 1: 827}, split="")
    result = zeroshot(fs)
    assert result.rows == "all" and result.evaluation.accuracy == 1.0


def test_user_mapping(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"red": [5, 6], "blue": [7]}))
    mapping = load_mapping(path)
    fs = logits_store(("blue", "red"), {0: 7, 1: 6})
    assert zeroshot(fs, mapping).evaluation.accuracy == 1.0
    path.write_text(json.dumps({"red": [5], "blue": [7], "green": [8]}))
    with pytest.raises(ClassifierError, match="does not hold: green"):
        zeroshot(fs, load_mapping(path))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"a": [1], "b": [1]}, "both"),
        ({"a": [1000], "b": [2]}, "not an ImageNet class id"),
        ({"a": [], "b": [2]}, "no ImageNet id"),
        ({"a": ["x"], "b": [2]}, "not an ImageNet class id"),
    ],
)
def test_bad_mappings(bad, message):
    with pytest.raises(ClassifierError, match=message):
        Mapping("test", {k: tuple(v) for k, v in bad.items()})


def test_mapping_file_errors(tmp_path):
    with pytest.raises(ClassifierError, match="does not exist"):
        load_mapping(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ClassifierError, match="JSON object"):
        load_mapping(tmp_path / "bad.json")


def test_needs_logits_and_two_covered_classes():
    fs = logits_store(("coast", "forest"), {0: 978})
    with pytest.raises(ClassifierError, match="covers 1 of the store's classes"):
        zeroshot(fs)
    narrow = FeatureSet(
        "fc7",
        np.zeros((2, 16), np.float32),
        np.array([0, 1]),
        np.array(["a", "b"], dtype=object),
        np.array(["test"] * 2, dtype=object),
        ("coast", "kitchen"),
    )
    with pytest.raises(ClassifierError, match="1000 ImageNet logits"):
        zeroshot(narrow)


def test_scene_key():
    assert scene_key("MITcoast") == "coast"
    assert scene_key("CALsuburb") == "suburb"
    assert scene_key("PARoffice") == "office"
    assert scene_key("LivingRoom") == "livingroom"
    assert scene_key("Tall Building") == "tallbuilding"
    assert scene_key("mitten") == "mitten"
