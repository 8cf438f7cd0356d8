"""15-Scene with EfficientNet-Lite1 (marked ``real`` and ``slow``): the 18 byte-identical pairs
are found and labelled as ../shared/data/scene15/README.md and a sha256sum count give them.

The store of all 4,485 images takes a few minutes to build; ``FSTORE_LITE1_STORE`` names one
already built with the flags of ../shared/models/README.md (layer ``pooled``) to reuse it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("FSTORE_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
)
MODEL = SHARED / "models" / "efficientnet_lite1.onnx"
DATA = SHARED / "data" / "scene15"

pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL.is_file() and DATA.is_dir()), reason=f"needs {MODEL} and {DATA}"),
]


@pytest.fixture(scope="module")
def lite1_store(tmp_path_factory) -> Path:
    given = os.environ.get("FSTORE_LITE1_STORE")
    if given:
        return Path(given)
    from fstore.images.preprocess import Preprocessing
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    store = tmp_path_factory.mktemp("lite1") / "lite1.h5"
    pre = Preprocessing(resize=274, crop=240, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    build_store(
        BuildConfig(store=store, images=DATA, model=MODEL, preprocessing=pre, layers=("pooled",))
    )
    return store


def test_the_18_byte_identical_pairs_are_found_and_labelled(lite1_store):
    from fstore.quality.duplicates import duplicates

    result = duplicates(lite1_store, "pooled")
    assert [len(c.keys) for c in result.exact] == [2] * 18
    labels = Counter(c.labels for c in result.exact)
    assert labels == {
        ("leak",): 10,
        ("leak", "conflict"): 1,
        ("within-test",): 5,
        ("within-train",): 2,
    }
    conflict = next(c for c in result.exact if "conflict" in c.labels)
    assert conflict.keys == ("test/tallbuilding/image_0300.jpg", "train/insidecity/image_0305.jpg")
    # every exact pair lies inside one of the clusters, which hold near copies too
    assert all(any(set(e.keys) <= set(c.keys) for c in result.clusters) for e in result.exact)
    leaked = set(result.leaked_test_keys())
    assert {
        k for c in result.exact if "leak" in c.labels for k in c.keys if k[:5] == "test/"
    } <= leaked
