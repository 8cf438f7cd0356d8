"""fsutil: JSON-ready values and the one rule for a model's metadata file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fstore.fsutil import json_ready, json_text, meta_path, read_meta, write_meta


def test_json_ready_turns_numpy_paths_and_nan_into_json():
    data = {
        1: np.float32(0.5),
        "nan": float("nan"),
        "inf": np.float64("inf"),
        "array": np.arange(3, dtype=np.int64),
        "nested": (np.bool_(True), [np.float32("nan"), Path("/a/b")]),
        "text": "fc7",
    }
    assert json_ready(data) == {
        "1": 0.5,
        "nan": None,
        "inf": None,
        "array": [0, 1, 2],
        "nested": [True, [None, "/a/b"]],
        "text": "fc7",
    }
    assert json.loads(json_text(data))["array"] == [0, 1, 2]
    with pytest.raises(TypeError):
        json_text({"x": object()})


def test_meta_beside_the_model_and_stale_copies_ignored(tmp_path):
    model = tmp_path / "vgg16-fc7.onnx"
    assert meta_path(model) == tmp_path / "vgg16-fc7.meta.json"
    model.write_bytes(b"onnx")
    assert read_meta(model) is None
    write_meta(model, {"fstore.layers": "fc7"})
    assert read_meta(model) == {"fstore.layers": "fc7"}
    later = meta_path(model).stat().st_mtime_ns + 10**9
    os.utime(model, ns=(later, later))  # the model was written again after its metadata
    assert read_meta(model) is None
