"""The store's fault table, through the real CLI in subprocesses: a full disk (every size from
100 KB to 1 MB), a read-only folder, a missing shard, two concurrent builds, SIGINT, SIGTERM,
SIGHUP, a corrupted shard and ``kill -9`` at random moments. Each fault ends in exit status 1
and one line on stderr, without a traceback or a signal death, and the same command then
resumes to a store that verifies and equals an uninterrupted build."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_folder, write_noop_model
from store_helpers import assert_same_store, needs_mounts

from fstore.store import sidecar

LAYERS = ("pooled",)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Images (3 classes, 90 images), a no-op model, and a store built from them in one go."""
    root = tmp_path_factory.mktemp("faults")
    images = root / "images"
    make_image_folder(images, {"a": 30, "b": 30, "c": 30}, size=(40, 36))
    model = write_noop_model(root / "noop.onnx")
    reference = root / "reference.h5"
    subprocess.run(build_cmd(images, reference, model), check=True, timeout=300)
    return images, model, reference


def build_cmd(images: Path, store: Path, model: Path) -> list[str]:
    return [sys.executable, "-m", "fstore.cli", "build", str(images), "--store", str(store),
            "--model", str(model), "--size", "32", "--provider", "cpu", "--batch-size", "2",
            "--shard-size", "4", "--threads", "1", "--workers", "1", "--quiet"]  # fmt: skip


def fstore(*args: str, check_fault: bool = False) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "fstore.cli", *args], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    if check_fault:
        assert_one_line_fault(out.returncode, out.stderr)
    return out


def assert_one_line_fault(returncode: int, stderr: str) -> None:
    assert returncode == 1, (returncode, stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("Error: "), stderr


def assert_resumed(store: Path, reference: Path, images: Path, model: Path) -> None:
    subprocess.run(build_cmd(images, store, model), check=True, timeout=300)
    assert fstore("verify", "--store", str(store)).returncode == 0
    assert_same_store(reference, store, LAYERS)


def shards(store: Path) -> list[Path]:
    folder = sidecar(store) / "shards"
    return sorted(folder.glob("*.h5")) if folder.is_dir() else []


def in_namespace(script: str) -> None:
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                   check=True, timeout=600)  # fmt: skip


@pytest.mark.slow
@needs_mounts
def test_a_full_disk_at_every_size_is_one_line_and_resumes(setup, tmp_path):
    images, model, reference = setup
    cmd = " ".join(build_cmd(images, Path("DISK/s.h5"), model))
    faulted = []
    for size in range(100, 1001, 100):
        disk, out = tmp_path / f"disk{size}", tmp_path / f"out{size}"
        disk.mkdir()
        run = cmd.replace("DISK", str(disk))
        in_namespace(
            f"mount -t tmpfs -o size={size}k tmpfs {disk} && ({run} 2> {tmp_path}/err; "
            f"echo $? > {tmp_path}/rc) && mount -o remount,size=50m {disk} && {run} && "
            f"cp -a {disk} {out}"
        )
        returncode = int((tmp_path / "rc").read_text())
        if returncode != 0:  # the largest sizes may hold the whole store
            faulted.append(size)
            assert_one_line_fault(returncode, (tmp_path / "err").read_text())
            assert "the disk is full" in (tmp_path / "err").read_text()
        assert fstore("verify", "--store", str(out / "s.h5")).returncode == 0
        assert_same_store(reference, out / "s.h5", LAYERS)
    assert faulted[:3] == [100, 200, 300], faulted  # the store needs more than 300 KB


@pytest.mark.slow
@needs_mounts
def test_a_read_only_folder_is_one_line_and_resumes(setup, tmp_path):
    images, model, reference = setup
    folder = tmp_path / "store"
    folder.mkdir()
    store = folder / "s.h5"
    few = tmp_path / "few"
    shutil.copytree(images, few)
    shutil.rmtree(few / "c")
    subprocess.run(build_cmd(few, store, model), check=True, timeout=300)
    shutil.copytree(images / "c", few / "c")
    run = " ".join(build_cmd(few, store, model))
    in_namespace(
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
        f"({run} 2> {tmp_path}/err; echo $? > {tmp_path}/rc)"
    )
    err = (tmp_path / "err").read_text()
    assert_one_line_fault(int((tmp_path / "rc").read_text()), err)
    assert "read-only" in err or "not writable" in err
    subprocess.run(build_cmd(few, store, model), check=True, timeout=300)
    assert fstore("verify", "--store", str(store)).returncode == 0
    assert_same_store(reference, store, LAYERS)


@pytest.mark.slow
def test_a_missing_shard_is_one_line_and_the_build_recomputes_it(setup, tmp_path):
    images, model, reference = setup
    store = tmp_path / "s.h5"
    subprocess.run(build_cmd(images, store, model), check=True, timeout=300)
    shards(store)[3].unlink()
    out = fstore("train", "svm", "--store", str(store), "--C", "1", check_fault=True)
    assert "missing" in out.stderr
    assert_resumed(store, reference, images, model)


@pytest.mark.slow
def test_a_corrupted_shard_is_one_line_and_the_build_recomputes_it(setup, tmp_path):
    images, model, reference = setup
    store = tmp_path / "s.h5"
    subprocess.run(build_cmd(images, store, model), check=True, timeout=300)
    path = shards(store)[5]
    data = bytearray(path.read_bytes())
    data[:8] = b"\0" * 8  # the HDF5 signature
    path.write_bytes(bytes(data))
    out = fstore("train", "svm", "--store", str(store), "--C", "1", check_fault=True)
    assert "does not open" in out.stderr and path.name in out.stderr
    assert_resumed(store, reference, images, model)


# A shell's background job (CI scripts, ``cmd &``) starts with SIGINT ignored, and a child
# inherits that: its Ctrl-C would never arrive. The build under test gets a terminal's default.
SIGINT_AS_ON_A_TERMINAL = [
    sys.executable, "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
]  # fmt: skip


def _start_and_stop(images: Path, store: Path, model: Path, shards_on_disk: int):
    """A build stopped (SIGSTOP) mid-way, once ``shards_on_disk`` shards are written: a fault
    sent to it now lands mid-build, however fast the machine runs the rest (23 shards in all)."""
    cmd = SIGINT_AS_ON_A_TERMINAL + build_cmd(images, store, model)[1:]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(shards(store)) < shards_on_disk and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)
    assert proc.poll() is None, "the build finished before the fault"
    assert len(shards(store)) < 20, "the build was nearly done before the fault"
    return proc


@pytest.mark.slow
def test_two_concurrent_builds_one_is_refused_in_one_line(setup, tmp_path):
    images, model, reference = setup
    store = tmp_path / "s.h5"
    first = _start_and_stop(images, store, model, 2)  # holds the lock while the second tries
    second = subprocess.run(build_cmd(images, store, model), capture_output=True, text=True)
    first.send_signal(signal.SIGCONT)
    first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    assert_one_line_fault(second.returncode, second.stderr)
    assert f"pid {first.pid}" in second.stderr
    assert_resumed(store, reference, images, model)


@pytest.mark.slow
def test_sigint_is_one_line_and_the_same_command_resumes(setup, tmp_path):
    images, model, reference = setup
    store = tmp_path / "s.h5"
    proc = _start_and_stop(images, store, model, 3)
    proc.send_signal(signal.SIGINT)  # delivered as the build continues
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert_one_line_fault(proc.returncode, err)
    assert "interrupted" in err and "run the same fstore build to resume" in err
    info = fstore("info", "--store", str(store))
    assert "incomplete: " in info.stdout
    assert fstore("verify", "--store", str(store)).returncode == 1
    assert_resumed(store, reference, images, model)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_and_sighup_stop_a_build_as_ctrl_c_does(setup, tmp_path, signum):
    """A batch scheduler's SIGTERM and a closed terminal's SIGHUP, sent mid-build (21 of 23
    shards still to write, so the signal never lands after the build let go of it)."""
    images, model, reference = setup
    store = tmp_path / "s.h5"
    proc = _start_and_stop(images, store, model, 2)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert_one_line_fault(proc.returncode, err)
    assert f"interrupted by {signum.name}" in err and "fstore build to resume" in err
    assert_resumed(store, reference, images, model)


@pytest.mark.slow
def test_kill_9_at_random_moments_20_trials_gives_the_uninterrupted_store(setup, tmp_path):
    """20 trials, each killing a build twice at a random moment, then letting it finish."""
    images, model, reference = setup
    rng = np.random.default_rng(7)
    start = time.monotonic()
    subprocess.run(build_cmd(images, tmp_path / "timed.h5", model), check=True, timeout=300)
    whole = time.monotonic() - start
    for trial in range(20):
        store = tmp_path / f"t{trial}.h5"
        for delay in rng.uniform(0.2, whole, size=2):
            proc = subprocess.Popen(build_cmd(images, store, model))
            time.sleep(delay)
            proc.kill()
            proc.wait()
        subprocess.run(build_cmd(images, store, model), check=True, timeout=300)
        assert_same_store(reference, store, LAYERS)
        assert not list(sidecar(store).rglob(".*.tmp"))
