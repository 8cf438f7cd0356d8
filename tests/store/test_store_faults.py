"""Faults during real builds: each ends in one line (what happened, what is safe, what to run)
and the next build resumes to a store identical to an uninterrupted one."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_folder
from store_helpers import assert_same_store, lock_held_elsewhere, needs_mounts

from fstore.errors import StoreError
from fstore.pipeline.model import build_store
from fstore.store import catalog, layout, load_features, sidecar, store_info
from fstore.store.layout import shard_path
from fstore.store.verify import verify


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    make_image_folder(root, {"a": 10, "b": 10, "c": 8})
    (root / "c" / "broken.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture
def reference(config_for, images, tmp_path) -> Path:
    build_store(config_for(images, store=tmp_path / "reference.h5"))
    return tmp_path / "reference.h5"


def failing_commit(monkeypatch, code: int, where: str, after: int) -> None:
    """Committing a written file (its rename) fails with ``code`` on the call after ``after``
    successful ones, for files in ``where`` (``shards``: a shard file; ``view``: fstore.h5)."""
    real, seen = layout.commit_file, []

    def commit(tmp: Path, final: Path):
        if (final.parent.name == "shards") == (where == "shards"):
            seen.append(final)
            if len(seen) > after:
                raise OSError(code, os.strerror(code), str(final))
        return real(tmp, final)

    monkeypatch.setattr(layout, "commit_file", commit)


@pytest.mark.parametrize(
    "code, where, words",
    [
        (errno.ENOSPC, "shards", "the disk is full while writing"),
        (errno.ENOSPC, "view", "the disk is full while writing"),
        (errno.EROFS, "shards", "the store's folder is read-only while writing"),
        (errno.EACCES, "view", "the store's folder is not writable while writing"),
    ],
)
@pytest.mark.slow
def test_a_write_fault_is_one_line_and_the_next_build_resumes(
    config_for, images, reference, tmp_path, monkeypatch, code, where, words
):
    store = tmp_path / "s.h5"
    failing_commit(monkeypatch, code, where, after=2 if where == "shards" else 0)
    with pytest.raises(StoreError) as info:
        build_store(config_for(images, store=store))
    message = str(info.value)
    assert words in message and "\n" not in message
    assert "nothing is lost" in message and "run the same fstore build again" in message
    assert not list(sidecar(store).rglob(".*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    if where == "shards":
        assert store_info(store).pending == 29 - 2 * 8 and not verify(store).ok  # 2 shards kept
    build_store(config_for(images, store=store))
    assert_same_store(reference, store)
    assert verify(store).ok


@pytest.mark.slow
def test_a_shard_deleted_or_truncated_between_builds_is_found_and_recomputed(
    config_for, images, reference, tmp_path
):
    store = tmp_path / "s.h5"
    build_store(config_for(images, store=store))
    names = sorted(os.listdir(sidecar(store) / "shards"))
    shard_path(store, names[0]).unlink()
    path = shard_path(store, names[2])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    found = verify(store)
    assert sorted(p.file for p in found.problems) == [names[0], names[2]]
    report = build_store(config_for(images, store=store))
    assert report.images_computed == 15  # two shards of 8, one holding the broken image
    assert os.listdir(sidecar(store) / "damaged") == [names[2]]
    assert_same_store(reference, store)
    assert verify(store).ok


def test_two_builds_on_one_store_one_refuses_naming_the_other(config_for, images, tmp_path):
    store = tmp_path / "s.h5"
    build_store(config_for(images, store=store))
    with lock_held_elsewhere(store) as pid:
        with pytest.raises(StoreError, match=f"another fstore process \\(pid {pid}\\)"):
            build_store(config_for(images, store=store))


@pytest.mark.slow
@needs_mounts
def test_a_real_full_disk_then_resume(config_for, images, reference, tmp_path, store_model):
    """A 200 KiB tmpfs fills during the build; after it grows the same command resumes."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    cmd = (f"{sys.executable} -m fstore.cli build {images} --store {disk}/s.h5 --layer pool5,fc7 "
           "--weights random --seed 0 --precision fp32 --size 32 --provider cpu --batch-size 4 "
           "--shard-size 8 "
           "--quiet")  # fmt: skip
    script = (f"mount -t tmpfs -o size=200k tmpfs {disk} && ({cmd} 2> {tmp_path}/err; "
              f"echo $? > {tmp_path}/rc) && mount -o remount,size=20m {disk} && {cmd} && "
              f"cp -a {disk} {out}")  # fmt: skip
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                   check=True, timeout=300)  # fmt: skip
    err = (tmp_path / "err").read_text().strip()
    assert (tmp_path / "rc").read_text().strip() == "1"
    assert err.startswith("Error: the disk is full while writing") and "\n" not in err, err
    assert_same_store(reference, out / "s.h5")


@pytest.mark.slow
def test_compaction_between_incremental_builds_changes_nothing(config_for, images, tmp_path):
    """Two stores see the same builds (then a changed and a new image); one is compacted in
    between: the same rows, in the same order, read back from segments and shards."""
    from helpers import random_image

    from fstore.store.compact import compact

    plain, compacted = tmp_path / "plain.h5", tmp_path / "compacted.h5"
    for store in (plain, compacted):
        build_store(config_for(images, store=store))
    assert compact(compacted, segment_rows=10, max_small=1).files_after == 2
    random_image(np.random.default_rng(5), (50, 40)).save(images / "a" / "img_003.jpg")
    make_image_folder(images, {"d": 3}, seed=4)
    for store in (plain, compacted):
        assert build_store(config_for(images, store=store)).images_computed == 4
    assert_same_store(plain, compacted)
    keys = list(load_features(plain, "fc7").keys)
    assert keys[-3:] == ["d/img_000.jpg", "d/img_001.jpg", "d/img_002.jpg"]
    assert keys == [k for k in keys if k.startswith("a/")] + keys[10:]  # the folder's order
    assert verify(compacted).ok


def _rows_by_key(store: Path, layer: str = "fc7") -> dict[str, tuple[str, np.ndarray]]:
    """key → (recorded sha256, features) of every live row."""
    fs = load_features(store, layer)
    with catalog.connect(store) as con:
        sha = dict(con.execute("SELECT key, sha256 FROM images"))
    return {k: (sha[k], x) for k, x in zip(fs.keys, fs.X)}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["replaced", "rewritten in place"])
def test_an_image_changed_while_being_read(config_for, images, tmp_path, monkeypatch, how):
    """The file is rewritten right after the reader took its bytes: the row is the version
    that was hashed (sha256 and features), the build ends without a message, and the next
    build recomputes the image, giving the store a build over the final files gives."""
    import hashlib
    import io

    from helpers import random_image

    from fstore.images import reader

    target = images / "b" / "img_003.jpg"
    before = tmp_path / "before"
    shutil.copytree(images, before)
    buffer = io.BytesIO()
    random_image(np.random.default_rng(9), (56, 44)).save(buffer, "JPEG")
    new_bytes, old_bytes = buffer.getvalue(), target.read_bytes()
    real_read, changed = reader.read_bytes, []

    def read_then_change(path: Path, *limit):
        data, mtime = real_read(path, *limit)
        if path == target and not changed:
            if how == "replaced":
                (target.parent / "tmp.part").write_bytes(new_bytes)
                os.replace(target.parent / "tmp.part", target)
            else:
                target.write_bytes(new_bytes)
            os.utime(target, ns=(mtime + 10**9, mtime + 10**9))
            changed.append(path)
        return data, mtime

    monkeypatch.setattr(reader, "read_bytes", read_then_change)
    store = tmp_path / "s.h5"
    report = build_store(config_for(images, store=store))
    monkeypatch.undo()
    assert changed and report.errors == 1  # only broken.jpg
    key = "b/img_003.jpg"
    stored = _rows_by_key(store)[key]
    build_store(config_for(before, store=tmp_path / "old.h5"))
    assert stored[0] == hashlib.sha256(old_bytes).hexdigest()
    np.testing.assert_array_equal(stored[1], _rows_by_key(tmp_path / "old.h5")[key][1])

    again = build_store(config_for(images, store=store))
    assert again.images_computed == 1
    after = tmp_path / "after"
    shutil.copytree(images, after)
    build_store(config_for(after, store=tmp_path / "final.h5"))
    got, want = _rows_by_key(store), _rows_by_key(tmp_path / "final.h5")
    assert sorted(got) == sorted(want) and got[key][0] == hashlib.sha256(new_bytes).hexdigest()
    for k in want:  # the recomputed image ran in a batch of its own: ORT may differ in ulps
        assert got[k][0] == want[k][0]
        np.testing.assert_allclose(got[k][1], want[k][1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[key][1], stored[1], rtol=1e-3)  # the two versions differ
    assert store_info(store).errors == store_info(tmp_path / "final.h5").errors
    assert build_store(config_for(images, store=store)).images_computed == 0


@pytest.mark.slow
def test_a_shard_changed_in_place_is_recomputed_and_a_touched_one_kept(
    config_for, images, reference, tmp_path
):
    """Shard files are never rewritten: one with other bytes (and another mtime) than the
    catalog recorded is set aside and recomputed; one with only another mtime is kept."""
    import h5py

    store = tmp_path / "s.h5"
    build_store(config_for(images, store=store))
    names = sorted(os.listdir(sidecar(store) / "shards"))
    with h5py.File(shard_path(store, names[1]), "r+") as f:
        f["features/fc7"][0] = f["features/fc7"][0] + 1.0  # still a valid HDF5 file
    touched = shard_path(store, names[3])
    os.utime(touched, ns=(touched.stat().st_mtime_ns + 10**9,) * 2)
    report = build_store(config_for(images, store=store))
    assert report.images_computed == 8  # the changed shard only
    assert os.listdir(sidecar(store) / "damaged") == [names[1]]
    assert_same_store(reference, store)
    assert verify(store).ok
    assert build_store(config_for(images, store=store)).images_computed == 0


@pytest.mark.slow
def test_rows_keep_the_folders_order_whatever_the_history(config_for, images, tmp_path):
    """A changed image in the middle, a new class between two others, a deleted image and a
    compaction between builds: the rows come back in the folder's order, with the features and
    labels of one build over the final folder."""
    from helpers import random_image

    from fstore.images.discover import discover
    from fstore.store.compact import compact

    store = tmp_path / "s.h5"
    build_store(config_for(images, store=store))
    random_image(np.random.default_rng(3), (52, 44)).save(images / "a" / "img_004.jpg")
    make_image_folder(images, {"b2": 3}, seed=6)  # sorts between b and c
    (images / "c" / "img_002.jpg").unlink()
    assert build_store(config_for(images, store=store)).images_computed == 4
    compact(store, segment_rows=10, max_small=1)
    make_image_folder(images, {"a": 12}, seed=8)  # img_010, img_011 end class a; others change
    build_store(config_for(images, store=store))
    fresh = tmp_path / "fresh.h5"
    build_store(config_for(images, store=fresh))
    folder = [it.key for it in discover(images).items if it.key != "c/broken.jpg"]
    got, want = load_features(store, "fc7"), load_features(fresh, "fc7")
    assert list(got.keys) == folder == list(want.keys)
    assert list(got.y) == list(want.y) and got.classes == want.classes
    # images recomputed in other batches than the fresh build's: ORT may differ in ulps
    np.testing.assert_allclose(got.X, want.X, rtol=1e-5, atol=1e-6)
