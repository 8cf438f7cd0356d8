"""The retired ``antialias`` field: old JSON still parses, old stores still resume and extend."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from helpers import SMALL, make_image_folder

from fstore.images.preprocess import Preprocessing

#: How fstore wrote SMALL's preprocessing before ``antialias`` was removed.
OLD_JSON = json.dumps({**json.loads(SMALL.to_json()), "antialias": True}, sort_keys=True)


def test_old_json_parses_and_new_json_has_no_antialias():
    assert Preprocessing.from_json(OLD_JSON) == SMALL
    assert "antialias" not in SMALL.to_json()


def test_an_old_style_store_resumes_and_extends(config_for, tmp_path):
    from fstore.pipeline.model import build
    from fstore.store import layout as st
    from fstore.store import load_features

    images = tmp_path / "images"
    make_image_folder(images, {"a": 3, "b": 3}, size=(40, 36))
    store = tmp_path / "old.h5"
    build(config_for(images, store=store, decode="fast"))
    manifest = st.read_manifest(store)
    # The fingerprint is the one earlier versions computed: their JSON, antialias included.
    provenance = manifest.provenance
    parts = {
        "weights": provenance["weights_sha256"],
        "precision": provenance["precision"],
        "layers": list(manifest.layers),
        "preprocessing": json.loads(OLD_JSON),
        "decode": provenance["decode"],
    }
    old = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    assert manifest.fingerprint == old
    st.write_manifest(
        store, replace(manifest, provenance={**provenance, "preprocessing": OLD_JSON})
    )

    make_image_folder(images, {"c": 2}, size=(40, 36))
    report = build(config_for(images, store=store, preprocessing=None))  # the store's own
    assert report.images_computed == 2 and report.images_done_before == 6
    assert load_features(store, "fc7").X.shape[0] == 8
