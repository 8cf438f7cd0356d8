"""What a store serves can be trusted, through the real CLI in subprocesses: damage to the
catalog, a stale, moved, copied or missing view, odd file names, damaged classifier files, an
unusable cache folder, huge inputs and a refused model. Each fault ends in
exit status 1 and one line on stderr, without a traceback or a signal death; then a repair (or
the same command) gives a store that verifies and equals an uninterrupted build, and a view
that plain h5py reads as the store."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_image_folder, write_noop_model
from store_helpers import assert_same_store, benchmark_script
from test_cli_faults import assert_one_line_fault, build_cmd

from fstore.store import load_features, sidecar

LAYERS = ("pooled",)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """18 images in 3 classes, a no-op model, and a store built from them in one go."""
    root = tmp_path_factory.mktemp("trust")
    images = root / "images"
    make_image_folder(images, {"coast": 6, "forest": 6, "street": 6}, size=(40, 36))
    model = write_noop_model(root / "noop.onnx")
    reference = root / "ref" / "s.h5"
    reference.parent.mkdir()
    subprocess.run(build_cmd(images, reference, model), check=True, timeout=300)
    return images, model, reference


def fstore(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fstore.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


def copy_of(reference: Path, tmp_path: Path) -> Path:
    """The reference store, copied with its name into a folder of its own."""
    shutil.copytree(reference.parent, tmp_path / "copy")
    return tmp_path / "copy" / reference.name


def assert_fault(*args: str, says: str) -> None:
    out = fstore(*args)
    assert_one_line_fault(out.returncode, out.stderr)
    assert says in out.stderr, out.stderr


def assert_view_serves(store: Path, reference: Path) -> None:
    """Plain h5py reads the view as fstore reads the reference, from this store's own files."""
    want = load_features(reference, "pooled")
    with h5py.File(store, "r") as f:
        features = f["features/pooled"]
        sources = {s.file_name for s in features.virtual_sources()}
        assert list(f["keys"].asstr()[()]) == list(want.keys)
        np.testing.assert_array_equal(features[()], want.X)
    assert all(s.startswith(f"{sidecar(store).name}/shards/") for s in sources), sources


def assert_verifies(store: Path) -> None:
    out = fstore("verify", "--store", str(store))
    assert out.returncode == 0 and out.stdout.startswith("ok: "), out.stdout + out.stderr


def test_the_reference_store_verifies_and_its_view_serves_it(setup):
    _, _, reference = setup
    assert_verifies(reference)
    assert_view_serves(reference, reference)


EDITS = {
    "a class name": "UPDATE images SET class = 'forst' WHERE key = 'forest/img_002.jpg'",
    "two rows swapped": "UPDATE images SET row = 3 - row WHERE shard = "
    "(SELECT shard FROM images WHERE key = 'coast/img_000.jpg') AND row IN (0, 3)",
    "a split": "UPDATE images SET split = 'train' WHERE key = 'street/img_005.jpg'",
    "a row number": "UPDATE images SET row = row + 1 WHERE key = 'coast/img_003.jpg'",
    "a shard's start": "UPDATE shards SET start = start + 1 WHERE name = "
    "(SELECT shard FROM images WHERE key = 'street/img_001.jpg')",
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_catalog_is_found_and_rebuilt_from_the_shards(setup, tmp_path, edit):
    images, model, reference = setup
    store = copy_of(reference, tmp_path)
    with sqlite3.connect(sidecar(store) / "catalog.sqlite") as con:
        assert con.execute(EDITS[edit]).rowcount >= 1
    con.close()
    assert_fault("verify", "--store", str(store), says="catalog")
    repaired = fstore("verify", "--repair", "--store", str(store))
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired: catalog rebuilt from" in repaired.stdout
    assert_verifies(store)
    assert_same_store(reference, store, LAYERS)
    assert_view_serves(store, reference)


def test_a_lost_catalog_is_rebuilt_by_verify_repair(setup, tmp_path):
    _, _, reference = setup
    store = copy_of(reference, tmp_path)
    (sidecar(store) / "catalog.sqlite").unlink()
    assert_fault("verify", "--store", str(store), says="catalog")
    assert fstore("verify", "--repair", "--store", str(store)).returncode == 0
    assert_verifies(store)
    assert_same_store(reference, store, LAYERS)
    assert_view_serves(store, reference)


def _flip_a_feature_byte(shard: Path) -> None:
    """Change one value of the file's features in place; the file still reads."""
    with h5py.File(shard, "r") as f:
        offset = f["features/pooled"].id.get_offset()
    with open(shard, "r+b") as raw:
        raw.seek(offset + 5)
        byte = raw.read(1)
        raw.seek(offset + 5)
        raw.write(bytes([byte[0] ^ 0x40]))


def test_a_shard_changed_while_the_catalog_is_lost_is_set_aside_not_trusted(setup, tmp_path):
    """Two faults at once: the catalog that held each file's sha256 is gone, and a shard's
    values changed. The repair finds the shard by the checksum written into it, sets it aside,
    and the next build computes its images again."""
    images, model, reference = setup
    store = copy_of(reference, tmp_path)
    (sidecar(store) / "catalog.sqlite").unlink()
    flipped = sorted((sidecar(store) / "shards").glob("*.h5"))[1]
    _flip_a_feature_byte(flipped)
    repaired = fstore("verify", "--repair", "--store", str(store))
    assert repaired.returncode == 0, repaired.stderr
    assert "1 damaged file(s) set aside" in repaired.stdout, repaired.stdout
    assert (sidecar(store) / "damaged" / flipped.name).is_file()
    subprocess.run(build_cmd(images, store, model), check=True, timeout=300)
    assert_verifies(store)
    assert_same_store(reference, store, LAYERS)


def test_a_lost_catalog_is_rebuilt_by_a_build_with_another_shard_size(setup, tmp_path):
    images, model, reference = setup
    store = copy_of(reference, tmp_path)
    (sidecar(store) / "catalog.sqlite").unlink()
    out = subprocess.run([*build_cmd(images, store, model)[:-1], "--shard-size", "3"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0 and "catalog rebuilt from" in out.stderr, out.stderr
    assert_verifies(store)
    assert_same_store(reference, store, LAYERS)
    assert_view_serves(store, reference)


def test_a_moved_store_is_noticed_and_its_view_rewritten_by_the_next_build(setup, tmp_path):
    images, model, reference = setup
    store = copy_of(reference, tmp_path)
    moved = store.with_name("t.h5")
    store.rename(moved)
    sidecar(store).rename(sidecar(moved))
    assert_fault("verify", "--store", str(moved), says="moved or copied")
    info = fstore("info", "--store", str(moved))
    assert info.returncode == 0 and "warning: the view" in info.stderr, info.stderr
    key = str(load_features(reference, "pooled").keys[0])
    near = fstore("neighbors", key, "--store", str(moved), "--layer", "pooled", "-k", "2")
    assert near.returncode == 0 and "the view" in near.stderr, near.stdout + near.stderr
    assert "moved or copied" in near.stderr and "Traceback" not in near.stderr
    subprocess.run(build_cmd(images, moved, model), check=True, timeout=300)
    assert_verifies(moved)
    assert_view_serves(moved, reference)


def test_a_copied_store_reads_its_own_shards_after_repair(setup, tmp_path):
    _, _, reference = setup
    store = copy_of(reference, tmp_path)
    twin = store.with_name("c.h5")
    shutil.copy2(store, twin)
    shutil.copytree(sidecar(store), sidecar(twin))
    shutil.rmtree(sidecar(store))  # the twin's view must not lean on the original's files
    assert_fault("verify", "--store", str(twin), says="moved or copied")
    assert fstore("verify", "--repair", "--store", str(twin)).returncode == 0
    assert_verifies(twin)
    assert_view_serves(twin, reference)


def test_a_view_killed_while_written_is_found_with_its_temporary_file(setup, tmp_path):
    _, _, reference = setup
    store = copy_of(reference, tmp_path)
    leftover = store.with_name(f".{store.name}.4242.tmp")
    store.rename(leftover)  # the view's bytes under the writer's temporary name, no view
    assert_fault("verify", "--store", str(store), says="is missing")
    assert "warning: the view" in fstore("info", "--store", str(store)).stderr
    repaired = fstore("verify", "--repair", "--store", str(store))
    assert repaired.returncode == 0 and "1 temporary file(s) deleted" in repaired.stdout
    assert not leftover.exists()
    assert_verifies(store)
    assert_view_serves(store, reference)


def test_a_stale_view_is_found_and_rewritten(setup, tmp_path):
    _, _, reference = setup
    store = copy_of(reference, tmp_path)
    with sqlite3.connect(sidecar(store) / "catalog.sqlite") as con:
        con.execute("PRAGMA user_version = 99")  # as a compaction stopped before the view
    con.close()
    assert_fault("verify", "--store", str(store), says="older than the catalog")
    assert fstore("verify", "--repair", "--store", str(store)).returncode == 0
    assert_verifies(store)


def test_file_names_of_any_bytes_are_stored_and_printed_escaped(setup, tmp_path):
    images, model, reference = setup
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    picture = (images / "coast" / "img_000.jpg").read_bytes()
    odd = os.fsencode(folder / "forest") + b"/bad\xff\xfename.jpg"
    with open(odd, "wb") as f:
        f.write(picture)
    (folder / "street" / "x\n  made-up line: fine.jpg").write_bytes(b"")  # and bad
    store = tmp_path / "s.h5"
    for _ in range(2):  # the second run finds everything stored
        out = subprocess.run(build_cmd(folder, store, model), capture_output=True, text=True)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert_verifies(store)
    keys = list(load_features(store, "pooled").keys)
    assert "forest/bad\\xff\\xfename.jpg" in keys and len(keys) == 19
    errors = fstore("info", "--errors", "--store", str(store)).stdout.splitlines()
    listed = [line for line in errors if line.startswith("  ")]
    assert listed == ["  street/x\\n  made-up line: fine.jpg: empty file"], errors


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory) -> dict[str, Path]:
    """An SVM and a linear head trained through the CLI on a store with a test split, each
    classifying a picture as its class."""
    images, model, _ = setup
    root = tmp_path_factory.mktemp("trained")
    store = root / "s.h5"
    split = [*build_cmd(images, store, model)[:-1], "--train-per-class", "4", "--quiet"]
    subprocess.run(split, check=True, timeout=300)
    files = {}
    for kind, suffix, extra in (
        ("svm", ".skops", ("--cv", "2")),
        ("head", ".safetensors", ("--epochs", "3")),
    ):
        out = fstore("train", kind, "--store", str(store), "--layer", "pooled",
                     "--out", str(root / kind), *extra)  # fmt: skip
        assert out.returncode == 0, out.stderr
        files[kind] = root / kind / f"classifier{suffix}"
        intact = fstore("classify", str(images / "coast" / "img_000.jpg"),
                        "--classifier", str(files[kind]))  # fmt: skip
        assert intact.returncode == 0 and "coast" in intact.stdout, intact.stdout + intact.stderr
    return files


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "bytes flipped": _flip_middle_byte,
    "classes swapped": lambda p: benchmark_script("corruption").swap_classes(p, "coast", "forest"),
}


@pytest.mark.slow  # training both through the CLI first: about 30 s
@pytest.mark.parametrize("kind", ["svm", "head"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_classifier_is_one_line_saying_to_train_again(
    setup, trained, tmp_path, kind, damage
):
    images, _, _ = setup
    picture = str(images / "coast" / "img_000.jpg")
    damaged = tmp_path / trained[kind].name
    shutil.copy(trained[kind], damaged)
    DAMAGE[damage](damaged)
    out = fstore("classify", picture, "--classifier", str(damaged))
    assert_one_line_fault(out.returncode, out.stderr)
    assert f"train it again with fstore train {kind}" in out.stderr, out.stderr


def test_a_huge_file_is_recorded_bad_without_being_read(setup, tmp_path):
    images, model, reference = setup
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    with open(folder / "coast" / "big.jpg", "wb") as f:
        f.truncate(2**30)  # sparse: 1 GiB that takes no disk
    store = tmp_path / "s.h5"
    out = subprocess.run([*build_cmd(folder, store, model)[:-1], "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    import json

    report = json.loads(out.stdout)
    assert report["errors_by_reason"] == {"too large": 1}
    assert report["peak_rss_mib"] < 600  # a 1 GiB read alone would pass 1024
    errors = fstore("info", "--errors", "--store", str(store)).stdout
    assert "coast/big.jpg: too large: 1073741824 bytes, more than --max-image-bytes" in errors


def test_a_refused_model_leaves_no_store_folder(setup, tmp_path):
    images, _, _ = setup
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not an ONNX model")
    store = tmp_path / "x.h5"
    out = subprocess.run(build_cmd(images, store, junk), capture_output=True, text=True)
    assert_one_line_fault(out.returncode, out.stderr)
    assert not sidecar(store).exists() and not store.exists()


@pytest.mark.parametrize("how", ["a file", "a read-only place"])
def test_an_unusable_cache_folder_is_one_line(setup, tmp_path, how):
    images, _, _ = setup
    cache = tmp_path / "cache-file"
    cache.write_text("in the way")
    env = {**os.environ, "FSTORE_CACHE": str(cache) if how == "a file" else "/proc/fstore"}
    out = fstore("build", str(images), "--store", str(tmp_path / "v.h5"), "--layer", "fc7",
                 "--weights", "random", "--size", "32", "--quiet", env=env)  # fmt: skip
    assert_one_line_fault(out.returncode, out.stderr)
    assert "FSTORE_CACHE" in out.stderr
