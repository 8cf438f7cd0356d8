"""fsutil: JSON-ready values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fstore.fsutil import json_ready, json_text, peak_rss_mib


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


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's VmHWM")
def test_peak_memory_is_the_process_own_not_its_parents():
    """A child spawned by a large parent reports its own peak (``ru_maxrss`` would report the
    parent's: it survives ``exec``), and a process's peak covers what it touched."""
    held = np.ones(1536 * 2**20 // 8)  # 1.5 GiB touched, held while the child runs
    code = "from fstore.fsutil import peak_rss_mib; print(peak_rss_mib())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)  # fmt: skip
    assert child < 1024 and peak_rss_mib() >= held.nbytes / 2**20
