"""``fstore build --engine ray``: the same shards, computed by Ray actors on many cores or machines.

Ray only maps fstore's own unit of work, one shard (a fixed list of images from the saved plan),
over what is not done yet. Each actor holds one ONNX Runtime session, created once from model
bytes sent through Ray's object store, and reads its images from the image folder, which must be
at the same path on every node (a shared filesystem). By default actors return the shard's rows
to the driver, which alone writes shard files (temporary name, fsync, rename) and the index, so
the store needs no shared filesystem and ends exactly as a local build would leave it.

One driver writing every shard becomes the limit once a few GPU workers feed it (its write rate
is in docs/performance.md). With
``RayOptions(workers_write=True)`` each actor writes its own shard file into the store, which
must then sit on storage every node sees at the same path, the same way (temporary name, fsync,
rename), and returns only the shard's metadata; the driver commits the index alone.

A worker killed mid-shard is restarted by Ray and its shard retried; a shard that still fails
after ``retries`` attempts is recorded in the store as failed (``fstore info``) and is tried again
by the next build, while the other shards go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from fstore.errors import MissingDependencyError
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import MAX_IMAGE_BYTES
from fstore.images.views import plan_views
from fstore.pipeline.read import Progress
from fstore.store.shards import ShardRows, shard_record, write_shard

NAMESPACE = "fstore"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run.

    Attributes:
        address: ``None`` starts a local Ray instance; ``auto`` or ``ray://HOST:PORT`` joins one.
        num_workers: actors (one ONNX Runtime session each).
        cpus_per_worker: Ray CPUs reserved per actor (fractions allowed); also its ORT threads.
        gpus_per_worker: Ray GPUs per actor (CUDA provider when > 0).
        retries: attempts per shard before it is recorded as failed.
        workers_write: actors write their shard files into the store themselves (shared
            storage) and the driver only commits the index.
    """

    address: str | None = None
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    retries: int = 3
    workers_write: bool = False


@dataclass(frozen=True)
class ShardTarget:
    """Where an actor writes the shards it computes (``workers_write``)."""

    store: str
    dtype: str
    fingerprint: str


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "--engine ray needs Ray: pip install 'fstore[ray]' (or pip install ray)"
        ) from None
    return ray


class ShardWorker:
    """A Ray actor: one ONNX Runtime session, computing whole shards."""

    def __init__(self, model: bytes, layers: tuple[str, ...], provider: str, threads: int,
                 preprocessing: str, batch_size: int, decode_workers: int,
                 dims: dict[str, int], decode: str = "exact", views: tuple[str, ...] = (),
                 max_image_bytes: int = MAX_IMAGE_BYTES) -> None:  # fmt: skip
        import tempfile

        from fstore.runtime.session import OrtBackend

        # ORT reads the model from a file most reliably; keep it private to this process.
        handle, path = tempfile.mkstemp(suffix=".onnx", prefix="fstore-worker-")
        with os.fdopen(handle, "wb") as f:
            f.write(model)
        self.preprocessing = Preprocessing.from_json(preprocessing)
        try:
            self.backend = OrtBackend.open(
                Path(path),
                provider,
                outputs=layers,
                threads=threads,
                preprocessing=self.preprocessing,
            )
        finally:
            os.unlink(path)
        self.batch_size, self.decode_workers, self.dims = batch_size, decode_workers, dims
        self.decode, self.max_image_bytes = decode, max_image_bytes
        self.views = plan_views(views, self.preprocessing) if views else None

    def pid(self) -> int:
        return os.getpid()

    def provider(self) -> str:
        return self.backend.provider

    def compute(self, name: str, images: list[tuple[str, str]], target: ShardTarget | None = None):
        """Compute one shard of ``images`` (key, path): a key is not always the path below the
        folder (names that are not UTF-8 are escaped); returns (name, ShardRows, StageTimes),
        or with ``target`` writes the shard file there and returns (name, (Part, FileInfo),
        StageTimes)."""
        from fstore.images.discover import ImageItem
        from fstore.pipeline.read import Work, iter_batches
        from fstore.pipeline.run import ShardAssembler, stream_batches

        items = [ImageItem(key, Path(path)) for key, path in images]
        assembler = ShardAssembler(self.backend, self.dims, self.views)
        rows = None
        work = Work([(name, items)], 0, len(items))
        batches = iter_batches(work, self.preprocessing, self.batch_size, self.decode_workers,
                               decode=self.decode, views=self.views,
                               max_bytes=self.max_image_bytes)  # fmt: skip
        for batch, output in stream_batches(batches, self.backend, assembler.times):
            rows = assembler.add(batch, output) or rows
        if target is None:
            return name, rows, assembler.times
        return name, _write_here(name, rows, target), assembler.times


def _write_here(name: str, rows: ShardRows, target: ShardTarget) -> tuple:
    """Write one shard file into the store from a worker; (rows without features, FileInfo)
    for the driver, which commits it."""
    info = write_shard(Path(target.store), f"{name}.h5", rows.keys, rows.features, target.dtype,
                       shard_record(name, rows))  # fmt: skip
    return replace(rows, features={}), info


def worker_class(ray, options: RayOptions, cls: type | None = None):
    """``cls`` (default :class:`ShardWorker`) as a Ray actor class with ``options``' resources
    and Ray's own fault tolerance.

    Ray restarts an actor that dies (``max_restarts=-1``, rerunning its constructor) and, with
    ``max_task_retries``, runs the shard it was computing again once it is back, so the driver
    neither polls for restarts nor resubmits. ``retry_exceptions`` (in :func:`compute_shards`)
    gives a shard that raised the same attempts.
    """
    return ray.remote(
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker,
        max_restarts=-1,
        max_task_retries=max(0, options.retries - 1),
    )(cls or ShardWorker)


def run(work, model_path: Path, layers: tuple[str, ...], dims: dict[str, int],
        preprocessing: Preprocessing, config, writer, report,
        options: RayOptions, progress: bool | None) -> str:  # fmt: skip
    """Compute ``work`` (a ``build.Work``) on Ray actors, handing each shard to ``writer``.

    Returns the provider the workers ran on.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"include_dashboard": False, "log_to_driver": False, "namespace": NAMESPACE}
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), **kwargs)
    actors = []
    try:
        model_ref = ray.put(model_path.read_bytes())
        provider = "cuda" if options.gpus_per_worker > 0 else config.provider
        cls = worker_class(ray, options)
        actors = [
            cls.options(name=f"fstore-worker-{i}", namespace=NAMESPACE).remote(
                model_ref,
                layers,
                "cpu" if provider == "auto" else provider,
                max(1, int(options.cpus_per_worker)),
                preprocessing=preprocessing.to_json(),
                batch_size=config.batch_size,
                decode_workers=config.workers,
                dims=dims,
                decode=config.decode,
                views=config.views,
                max_image_bytes=config.max_image_bytes,
            )
            for i in range(options.num_workers)
        ]
        ran_on = ray.get(actors[0].provider.remote())
        logger.info("ray: %d workers on %s, %g CPUs in the cluster", len(actors), ran_on.upper(),
                    ray.cluster_resources().get("CPU", 0))  # fmt: skip
        _write_all(ray, actors, work, writer, report=report, options=options, progress=progress)
        return ran_on
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


@dataclass(frozen=True)
class ShardFailure:
    """A shard that failed every attempt; ``reason`` is one line for ``fstore info``."""

    name: str
    reason: str


def compute_shards(ray, actors: list, shards: list[tuple[str, list[str]]],
                   target: ShardTarget | None = None, retries: int = 3) -> Iterator:  # fmt: skip
    """Run ``shards`` (name, image keys) on ``actors``; yield each result as it comes.

    A result is what ``ShardWorker.compute`` returns, in any order; after them, one
    :class:`ShardFailure` per shard that failed all ``retries`` attempts (Ray retried it).
    Each actor sits twice in the pool, so its next shard waits on it while the driver writes
    the last one.
    """
    from ray.util import ActorPool

    pool = ActorPool([actor for actor in actors for _ in range(2)])
    for shard in shards:
        pool.submit(
            lambda actor, s: actor.compute.options(retry_exceptions=True).remote(*s, target),
            shard,
        )
    done, errors = set(), []
    while pool.has_next():
        try:
            result = pool.get_next_unordered()
        except ray.exceptions.RayError as exc:
            # Ray does not say which shard an error belongs to: the ones that never came back.
            errors.append(type(exc).__name__)
            continue
        done.add(result[0])
        yield result
    reason = f"failed after {retries} attempts: {', '.join(sorted(set(errors)))}"
    for name, _ in shards:
        if name not in done:
            yield ShardFailure(name, reason)


def _write_all(ray, actors, work, writer, report, options: RayOptions, progress) -> None:
    """Hand each finished shard to ``writer`` as it comes; record the ones that failed."""
    sizes = {name: len(items) for name, items in work.shards}
    target = None
    if options.workers_write:
        target = ShardTarget(str(writer.store.resolve()), writer.manifest.dtype,
                             writer.manifest.fingerprint)  # fmt: skip
    shards = [(name, [(item.key, str(item.path)) for item in items]) for name, items in work.shards]
    bar = Progress(sum(sizes.values()), "build[ray]", progress)
    written = 0
    with contextlib.closing(bar):
        for result in compute_shards(ray, actors, shards, target, options.retries):
            if isinstance(result, ShardFailure):
                writer.mark_failed(result.name, result.reason)
                bar.update(sizes[result.name])
                continue
            name, rows, times = result
            if target is None:
                writer.put(name, rows)
            else:
                writer.add_written(name, *rows)
            report.absorb(times)
            written += 1
            bar.update(sizes[name])
            bar.bar.set_postfix_str(f"shards {written}/{len(sizes)}")
