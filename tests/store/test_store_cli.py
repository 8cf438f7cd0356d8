"""``fstore verify`` and ``fstore compact`` on the command line."""

from __future__ import annotations

import os

from click.testing import CliRunner
from store_helpers import synthetic_store

from fstore.cli import cli
from fstore.store import sidecar
from fstore.store.layout import shard_path


def test_verify_and_compact_commands(tmp_path):
    store = synthetic_store(tmp_path / "s.h5", shards=6, rows=3)
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", "--store", str(store)])
    assert ok.exit_code == 0 and ok.output.startswith("ok: 6 files, 18 rows"), ok.output
    done = runner.invoke(cli, ["compact", "--store", str(store), "--segment-rows", "9"])
    assert done.exit_code == 0 and done.stdout.startswith("6 files -> 2 "), done.output
    name = sorted(os.listdir(sidecar(store) / "shards"))[0]
    shard_path(store, name).unlink()
    bad = runner.invoke(cli, ["verify", "--store", str(store)])
    assert bad.exit_code == 1
    assert bad.stdout.splitlines() == [f"problem: {name}: missing"]
    assert bad.stderr.splitlines() == [
        f"Error: {name}: missing; run: fstore verify --repair --store {store}, then fstore build "
        f"--store {store}"
    ]
    read = runner.invoke(cli, ["train", "svm", "--store", str(store), "--layer", "f"])
    assert read.exit_code != 0 and "missing" in read.output and "Traceback" not in read.output


def test_info_and_verify_say_a_store_is_unfinished(tmp_path):
    from store_helpers import manifest

    from fstore.pipeline.plan import shard_name
    from fstore.store import catalog

    store = synthetic_store(tmp_path / "s.h5", shards=4, rows=10)
    with catalog.connect(store, write=True) as con, catalog.transaction(con, store):
        name = shard_name(2, 0)
        catalog.add_plan(con, [name], [(f"c1/new{i}", "c1", "", name, 0, 0) for i in range(5)])
    assert manifest().layers == ("f", "g")
    runner = CliRunner()
    info = runner.invoke(cli, ["info", "--store", str(store)])
    assert info.exit_code == 0, info.output
    assert "incomplete: 40 of 45 planned images; run the same fstore build to finish" in info.output
    assert "images:     40 " in info.output
    check = runner.invoke(cli, ["verify", "--store", str(store)])
    assert check.exit_code == 1 and check.stderr.startswith("Error: incomplete: 5 planned images")
    assert check.stdout == ""


def test_repairing_a_store_without_an_image_folder_keeps_every_key(tmp_path, monkeypatch):
    """A store written without images (its manifest names no folder) gets its lost catalog
    back with every key, whatever folder the command runs in."""
    from fstore.store import load_features

    store = synthetic_store(tmp_path / "s.h5", shards=2, rows=4)
    want = load_features(store, "f").keys.tolist()
    (sidecar(store) / "catalog.sqlite").unlink()
    here = tmp_path / "elsewhere" / "c0"
    here.mkdir(parents=True)
    (here / "img000000.jpg").write_bytes(b"")  # an image folder that is not the store's
    monkeypatch.chdir(here.parent)
    result = CliRunner().invoke(cli, ["verify", "--repair", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert load_features(store, "f").keys.tolist() == want
