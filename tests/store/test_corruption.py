"""A seeded subset of the corruption campaign (scripts/benchmarks/corruption.py): one fault per
trial in the catalog, a shard, the view or a classifier file; never a traceback, never a
silent difference, and every detected store fault repaired to the reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "benchmarks" / "corruption.py"


@pytest.mark.slow  # 10 s on the shared 2-core machine (load 5)
def test_ten_seeded_faults_are_each_harmless_detected_or_refused(tmp_path):
    spec = importlib.util.spec_from_file_location("corruption", SCRIPT)
    corruption = importlib.util.module_from_spec(spec)
    sys.modules["corruption"] = corruption  # its dataclasses look their module up
    spec.loader.exec_module(corruption)
    result = corruption.campaign(10, seed=0, workdir=tmp_path)
    figures = result.figures()
    bad = [t for t in result.trials if t.verdict in ("silent", "traceback", "not-restored")]
    assert not bad, bad
    assert figures["trials"] == 10 and figures["detected"] >= 5, figures
    assert figures["silent_differences"] == figures["tracebacks"] == 0
