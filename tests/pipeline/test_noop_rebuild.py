"""A build with nothing to do: it compares the folder's rows with the catalog's, reads no
model (neither onnx nor ONNX Runtime is imported, a known model file is not hashed again) and
leaves the catalog and the view as they were. Names that are not UTF-8 keep their paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from helpers import write_noop_model

from fstore.errors import StoreError
from fstore.images.discover import discover, image_files
from fstore.pipeline.config import BuildConfig
from fstore.pipeline.model import build_store
from fstore.store import catalog


def _config(images: Path, store: Path, model: Path) -> BuildConfig:
    from fstore.images.preprocess import Preprocessing

    small = Preprocessing(resize=32, crop=32)
    return BuildConfig(store=store, images=images, model=model, preprocessing=small,
                       provider="cpu", shard_size=4, workers=1, threads=1)  # fmt: skip


def test_a_noop_rebuild_imports_no_onnx_and_changes_nothing(tmp_path, image_folder):
    model, store = write_noop_model(tmp_path / "noop.onnx"), tmp_path / "s.h5"
    assert build_store(_config(image_folder, store, model)).images_computed == 12
    with closing(catalog.connect(store)) as con:
        version = catalog.version(con)
    view = store.stat().st_mtime_ns
    code = (
        "import sys\n"
        "from fstore.cli import cli\n"
        f"args = ['build', {str(image_folder)!r}, '--store', {str(store)!r}, '--model',"
        f" {str(model)!r}, '--size', '32', '--resize', '32', '--provider', 'cpu', '--quiet']\n"
        "try:\n"
        "    cli.main(args)\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "0 images computed, 12 already stored" in lines[0]
    assert lines[-1] == "[]"  # neither onnx nor ONNX Runtime (nor torch) was imported
    with closing(catalog.connect(store)) as con:
        assert catalog.version(con) == version
    assert store.stat().st_mtime_ns == view


def test_a_build_walks_the_image_folder_once(tmp_path, image_folder, monkeypatch):
    """The walk is most of a rebuild with nothing to do (about 0.4 s per 100,000 files), so
    ``build_store`` hands the folder it checked to ``fill_store`` instead of walking it again."""
    from fstore.images import discover as discover_module
    from fstore.pipeline import fill, model

    config = _config(image_folder, tmp_path / "s.h5", write_noop_model(tmp_path / "noop.onnx"))
    walked: list[Path] = []
    real = discover_module.discover
    counting = lambda root: walked.append(Path(root)) or real(root)  # noqa: E731
    monkeypatch.setattr(model, "discover", counting)
    monkeypatch.setattr(fill, "discover", counting)
    assert model.build_store(config, progress=False).images_computed == 12
    assert model.build_store(config, progress=False).images_computed == 0
    assert walked == [image_folder, image_folder]  # one walk per build


def test_a_known_model_file_is_hashed_again_only_when_its_stat_moves(
    tmp_path, image_folder, monkeypatch
):
    from fstore.pipeline import plan

    model, store = write_noop_model(tmp_path / "noop.onnx"), tmp_path / "s.h5"
    config = _config(image_folder, store, model)
    build_store(config)
    hashed: list[Path] = []
    real = plan.file_sha256
    monkeypatch.setattr(plan, "file_sha256", lambda p: hashed.append(Path(p)) or real(p))
    build_store(config)  # the store recorded the file's sha256, not yet its stat
    build_store(config)
    assert hashed == [model]
    os.utime(model, ns=(model.stat().st_mtime_ns + 10**9,) * 2)  # same bytes, new mtime
    assert build_store(config).images_computed == 0
    build_store(config)
    assert hashed == [model, model]
    with closing(catalog.connect(store, write=True)) as con:  # a stamp that says nothing
        catalog.set_meta(con, store, "model_stat", "garbage")
    assert build_store(config).images_computed == 0
    assert hashed == [model] * 3
    other = write_noop_model(tmp_path / "other.onnx", size=32)
    other.write_bytes(other.read_bytes() + b"\x22\x00")  # the same graph, other bytes
    shutil.copystat(model, other)
    os.replace(other, model)  # same path, same mtime, another size
    with pytest.raises(StoreError, match="another model"):
        build_store(config)


def test_names_that_are_not_utf8_keep_their_paths(tmp_path):
    """A folder and a file named in bytes that are not UTF-8 are keyed with ``\\xNN`` escapes
    and read from their real paths; a file whose name is the escaped text of another is kept,
    and the escaped one skipped."""
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    odd_folder = os.fsencode(root) + b"/b\xff"
    os.mkdir(odd_folder)
    for name in (b"a/x\xfe.jpg", b"a/x\\xfe.jpg", b"b\xff/y.jpg", b"a/z.jpg"):
        with open(os.fsencode(root) + b"/" + name, "wb") as f:
            f.write(name)
    found = discover(root)
    assert found.keys == ["a/x\\xfe.jpg", "a/z.jpg", "b\\xff/y.jpg"]
    assert found.skipped == {
        "a/x\\xfe.jpg (2)": "its name, with the bytes that are not UTF-8 escaped, is another file's"
    }
    assert [it.path.read_bytes() for it in found.items] == [
        b"a/x\\xfe.jpg",
        b"a/z.jpg",
        b"b\xff/y.jpg",
    ]
    assert len(image_files(root)) == 4 and all(p.is_file() for p in image_files(root))


def test_a_folder_outside_the_class_layout_is_named(tmp_path, image_folder):
    from fstore.errors import DatasetError

    (image_folder / "loose.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="image loose.jpg is not inside a class folder"):
        discover(image_folder)
