"""Which views a report asks its build for: the default for a new store, the store's own for an
existing one, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from fstore.errors import FstoreError
from fstore.report.config import DEFAULT_VIEWS, ReportConfig


def test_a_new_store_gets_the_default_views_an_existing_one_its_own(tmp_path: Path):
    config = ReportConfig(images=tmp_path, out=tmp_path / "out")
    assert config.wanted_views == DEFAULT_VIEWS == ("flip",)
    (tmp_path / "out" / "fstore.h5.d").mkdir(parents=True)  # a build has started it
    assert config.wanted_views == ()  # empty: the build keeps the store's view sets


def test_views_given_are_checked_and_spelled_one_way(tmp_path: Path):
    config = ReportConfig(images=tmp_path, views=("flip", "scales:0320+240", "flip"))
    assert config.wanted_views == ("flip", "scales:320+240")
    assert ReportConfig(images=tmp_path, views=()).wanted_views == ()
    with pytest.raises(FstoreError, match="unknown view set 'mirror'"):
        ReportConfig(images=tmp_path, views=("mirror",))
    with pytest.raises(FstoreError, match="--cost-images"):
        ReportConfig(images=tmp_path, cost_images=0)
