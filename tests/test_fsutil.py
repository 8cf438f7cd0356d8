"""fsutil: JSON-ready values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fstore.fsutil import json_ready, json_text


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
