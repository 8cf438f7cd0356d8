"""A seeded subset of the corruption campaign (scripts/benchmarks/corruption.py): one fault per
trial in the catalog, a shard, the view or a classifier file; never a traceback, never a
silent difference, and every detected store fault repaired to the reference."""

from __future__ import annotations

import pytest
from store_helpers import benchmark_script


@pytest.mark.slow  # 10 s on the shared 2-core machine (load 5)
def test_ten_seeded_faults_are_each_harmless_detected_or_refused(tmp_path):
    corruption = benchmark_script("corruption")
    result = corruption.campaign(10, seed=0, workdir=tmp_path)
    figures = result.figures()
    bad = [t for t in result.trials if t.verdict in ("silent", "traceback", "not-restored")]
    assert not bad, bad
    assert figures["trials"] == 10 and figures["detected"] >= 5, figures
    assert figures["silent_differences"] == figures["tracebacks"] == 0
