"""The Ray engine on a local 2-CPU cluster: same store as a local build, worker and driver kills.

Ray's CPU accounting on 2 cores: two actors at 1 CPU each and nothing else that reserves CPUs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image_folder

from fstore.errors import MissingDependencyError
from fstore.pipeline import ray_engine
from fstore.pipeline.model import build_store
from fstore.pipeline.ray_engine import RayOptions, ShardFailure, compute_shards
from fstore.store import load_features, sidecar, store_info

# each builds a store or a report: seconds to minutes (pytest -m slow)
pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="fstore")
    yield ray
    ray.shutdown()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    make_image_folder(root, {"a": 14, "b": 14, "c": 12}, size=(40, 36))
    (root / "c" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def wait_for_workers(ray, count: int, timeout: float = 60.0) -> list:
    """Handles of the build's named worker actors once ``count`` exist."""
    wanted = [f"fstore-worker-{i}" for i in range(count)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        if all(n in names for n in wanted):
            return [ray.get_actor(n, namespace=ray_engine.NAMESPACE) for n in wanted]
        time.sleep(0.1)
    raise TimeoutError("ray workers did not start")


def assert_same_store(a: Path, b: Path) -> None:
    for layer in ("pool5", "fc7"):
        x, y = load_features(a, layer), load_features(b, layer)
        assert list(x.keys) == list(y.keys)
        np.testing.assert_allclose(x.X, y.X, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(x.y, y.y)
    assert store_info(a).errors == store_info(b).errors


def shard_count(store: Path) -> int:
    folder = sidecar(store) / "shards"
    return len(list(folder.glob("g*.h5"))) if folder.is_dir() else 0


def test_ray_build_equals_local_build(ray_cluster, config_for, tmp_path, images):
    local = build_store(config_for(images, store=tmp_path / "local.h5"))
    options = RayOptions(num_workers=2, cpus_per_worker=1)
    distributed = build_store(
        config_for(images, store=tmp_path / "ray.h5", engine="ray", ray=options)
    )
    assert distributed.images_computed == local.images_computed == 40
    assert distributed.errors == 1 and distributed.shards_written == local.shards_written == 6
    assert_same_store(tmp_path / "local.h5", tmp_path / "ray.h5")
    # Resuming either way is a no-op: the shards are fstore's, not Ray's.
    again = build_store(config_for(images, store=tmp_path / "ray.h5"))
    assert again.images_computed == 0


def test_ray_reads_escaped_names_and_keeps_the_byte_limit(
    ray_cluster, config_for, tmp_path, images
):
    """The actors read an image by its path, not by its key (a name that is not UTF-8 has an
    escaped key), and refuse a file over ``max_image_bytes`` unread, as a local build does."""
    import shutil

    odd = os.fsencode(images / "a") + b"/odd\xff.jpg"
    shutil.copyfile(images / "a" / "img_000.jpg", odd)
    big = images / "b" / "big.jpg"
    big.write_bytes((images / "b" / "img_000.jpg").read_bytes() + b"\0" * 300_000)
    limit = {"max_image_bytes": 200_000}
    local = build_store(config_for(images, store=tmp_path / "local.h5", **limit))
    options = RayOptions(num_workers=2, cpus_per_worker=1)
    distributed = build_store(
        config_for(images, store=tmp_path / "ray.h5", engine="ray", ray=options, **limit)
    )
    assert distributed.images_computed == local.images_computed == 41
    assert "a/odd\\xff.jpg" in load_features(tmp_path / "ray.h5", "fc7").keys.tolist()
    errors = store_info(tmp_path / "ray.h5").errors
    assert any(e["key"] == "b/big.jpg" for e in errors), errors
    assert_same_store(tmp_path / "local.h5", tmp_path / "ray.h5")


def test_killing_a_worker_mid_build_loses_nothing(ray_cluster, config_for, tmp_path, images):
    build_store(config_for(images, store=tmp_path / "local.h5"))
    store = tmp_path / "ray.h5"
    config = config_for(
        images,
        store=store,
        engine="ray",
        shard_size=2,
        batch_size=1,
        ray=RayOptions(num_workers=2, cpus_per_worker=1, retries=3),
    )
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("report", build_store(config)))
    thread.start()
    workers = wait_for_workers(ray_cluster, 2)
    victim = ray_cluster.get(workers[0].pid.remote())
    while shard_count(store) < 3 and thread.is_alive():
        time.sleep(0.01)
    assert thread.is_alive(), "the build ended before a worker could be killed"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    report = result["report"]
    assert store_info(store).failed_shards == []
    assert report.images_computed == 40
    assert_same_store(tmp_path / "local.h5", store)


def test_driver_killed_then_rerun_resumes(store_model, tmp_path, images):
    store = tmp_path / "ray.h5"

    def cmd(target: Path, engine: str) -> list[str]:
        return [sys.executable, "-m", "fstore.cli", "build", str(images), "--store", str(target),
                "--layer", "pool5,fc7", "--weights", "random", "--seed", "0", "--size", "32",
                "--provider", "cpu", "--batch-size", "1", "--shard-size", "2", "--quiet",
                "--engine", engine, "--address", "local", "--num-workers", "2"]  # fmt: skip

    proc = subprocess.Popen(cmd(store, "ray"), start_new_session=True)
    deadline = time.monotonic() + 180
    while shard_count(store) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = shard_count(store)
    assert 4 <= done < 21
    subprocess.run(cmd(store, "ray"), check=True, timeout=300)
    reference = tmp_path / "local.h5"
    subprocess.run(cmd(reference, "local"), check=True, timeout=300)
    assert_same_store(reference, store)


def test_missing_ray_is_a_one_line_error(config_for, images, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match="pip install"):
        build_store(replace(config_for(images), engine="ray"))


def test_workers_write_their_shards_and_the_driver_commits_only_the_index(
    ray_cluster, config_for, tmp_path, images, monkeypatch
):
    """``workers_write``: shard files come from the actors; the store equals a local build."""
    from fstore.pipeline import write

    build_store(config_for(images, store=tmp_path / "local.h5"))
    written_here = []
    real = write.write_shard
    monkeypatch.setattr(
        write, "write_shard", lambda *a, **k: written_here.append(a) or real(*a, **k)
    )
    options = RayOptions(num_workers=2, cpus_per_worker=1, workers_write=True)
    report = build_store(config_for(images, store=tmp_path / "ray.h5", engine="ray", ray=options))
    assert report.images_computed == 40 and report.shards_written == 6
    assert written_here == []  # the driver wrote no shard file, only the catalog
    assert_same_store(tmp_path / "local.h5", tmp_path / "ray.h5")
    from fstore.store.verify import verify

    assert verify(tmp_path / "ray.h5").ok


def test_ray_retries_a_shard_and_records_one_that_fails_every_attempt(ray_cluster, tmp_path):
    """Ray itself restarts the killed actor and reruns its shard; ``bad`` fails 2 of 2 tries."""

    class Flaky:  # defined here: Ray ships it by value, not by module name
        """Stands in for ShardWorker: ``bad`` always raises, ``crash`` kills the actor once."""

        def __init__(self, marker: str) -> None:
            self.marker = Path(marker)

        def compute(self, name: str, keys: list[str], target=None):
            with open(self.marker / name, "a") as f:
                f.write("x")  # one mark per attempt, across restarts
            if name == "bad":
                raise OSError("disk full")
            if name == "crash" and (self.marker / name).read_text() == "x":
                os._exit(1)
            return name, len(keys), None

    options = RayOptions(num_workers=2, cpus_per_worker=1, retries=2)
    actors = [ray_engine.worker_class(ray_cluster, options, Flaky).remote(str(tmp_path))
              for _ in range(2)]  # fmt: skip
    shards = [("a", ["1", "2"]), ("bad", ["3"]), ("crash", ["4", "5", "6"]), ("b", ["7"])]
    results = list(compute_shards(ray_cluster, actors, shards, retries=options.retries))
    done = sorted(r for r in results if not isinstance(r, ShardFailure))
    assert done == [("a", 2, None), ("b", 1, None), ("crash", 3, None)]
    failures = [r for r in results if isinstance(r, ShardFailure)]
    assert [f.name for f in failures] == ["bad"]
    assert failures[0].reason.startswith("failed after 2 attempts: RayTaskError")
    assert "\n" not in failures[0].reason
    assert (tmp_path / "bad").read_text() == "xx" and (tmp_path / "crash").read_text() == "xx"
