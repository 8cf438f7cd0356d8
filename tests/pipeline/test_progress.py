"""Progress where stderr is not a terminal: a line now and then, with the rate and time left."""

from __future__ import annotations

import logging

from fstore.pipeline import read


def test_progress_off_a_terminal_logs_lines_with_rate_and_time_left(caplog, monkeypatch):
    clock = iter([0.0, 31.0, 40.0, 62.0])
    monkeypatch.setattr(read.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="fstore.pipeline.read"):
        bar = read.Progress(100, "build", None)  # pytest's stderr is not a terminal
        bar.update(10)  # 31 s: a line
        bar.update(10)  # 40 s: too soon for another
        bar.update(20)  # 62 s: a line
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "build: 10 of 100 images (10%), 0.3 images/s, about 5 min left",
        "build: 40 of 100 images (40%), 0.6 images/s, about 2 min left",
    ]


def test_quiet_progress_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="fstore.pipeline.read"):
        bar = read.Progress(10, "build", False, every=0.0)
        bar.update(5)
        bar.close()
    assert caplog.records == []
