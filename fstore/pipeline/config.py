"""What ``fstore build`` is asked to do, as one frozen dataclass the CLI fills."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fstore.images.discover import SplitSpec
from fstore.images.preprocess import Preprocessing, PreprocessingFlags
from fstore.images.reader import MAX_IMAGE_BYTES
from fstore.pipeline.ray_engine import RayOptions
from fstore.runtime.weights_source import WeightsSource

DTYPES = ("float32", "float16")
#: The decode mode of a new store when none is asked for (see the README's speed section).
DEFAULT_DECODE = "fast"


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``fstore build`` is asked to do.

    Attributes:
        store: the index file (``fstore.h5``).
        images: the image folder; ``None`` to reuse the one recorded in the store.
        layers: layers to store; ``None`` to reuse the store's.
        weights: the network's weights; ``None`` for the store's (or ImageNet for a new store).
        model: an ONNX file to use instead of exporting a network (remembered by the store).
        arch: the network to export (``vgg16``, ``resnet50``, ``timm:NAME``; see
            :mod:`fstore.export.architectures`); ``None`` for the store's, else VGG16.
        preprocessing: for a ``model`` without fstore metadata.
        provider: ``cpu``, ``cuda`` or ``auto``.
        batch_size: images per model run.
        workers: decode threads (``None``: the usable cores, ``os.sched_getaffinity``).
        shard_size: images per shard (a multiple of ``batch_size`` keeps batches aligned).
        dtype: storage type of the features, ``float32`` or ``float16``.
        split: how train/test is assigned.
        threads: ONNX Runtime intra-op threads (``None``: all cores).
        engine: ``local`` (this process) or ``ray`` (Ray actors; see :mod:`ray_engine`).
        ray: where and how wide the Ray engine runs.
        precision: ``fp32``, ``int8`` (calibrated on the build's images) or ``fp16``.
        decode: ``exact`` or ``fast`` (``None``: the store's, else :data:`DEFAULT_DECODE`).
        pool: decode workers as ``threads`` or ``processes`` (shared-memory batch buffers).
        views: view sets (``flip``, ``crops5``, ``scales:A+B``; see
            :mod:`fstore.images.views`): each layer ``L`` is also stored as ``L@V``, its mean
            over the views of set ``V``. Empty: the store's.
        max_image_bytes: larger image files are recorded as bad without being read.
        flags: the preprocessing options as typed (``preprocessing`` completes them): what a
            model's own preprocessing is checked against.
    """

    store: Path
    images: Path | None = None
    layers: tuple[str, ...] | None = None
    weights: WeightsSource | None = None
    model: Path | None = None
    arch: str | None = None
    preprocessing: Preprocessing | None = None
    provider: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    shard_size: int = 256
    dtype: str = "float32"
    split: SplitSpec | None = None
    threads: int | None = None
    engine: str = "local"
    ray: RayOptions | None = None
    precision: str = "fp32"
    decode: str | None = None
    pool: str = "threads"
    views: tuple[str, ...] = ()
    max_image_bytes: int = MAX_IMAGE_BYTES
    flags: PreprocessingFlags | None = None

    @classmethod
    def from_options(
        cls,
        *,
        images: Path | None,
        store: Path | None,
        layers: tuple[tuple[str, ...], ...],
        weights: str | None,
        seed: int,
        model: Path | None,
        preprocessing: PreprocessingFlags | None,
        float16: bool,
        train_per_class: int | None,
        split_seed: int,
        views: str | None,
        address: str | None,
        num_workers: int,
        cpus_per_worker: float,
        gpus_per_worker: float,
        workers_write: bool,
        **settings,
    ) -> BuildConfig:
        """The config of ``fstore build``'s options, as click hands them over: ``layers`` as
        the repeated ``--layer`` lists, ``weights`` as its text, ``views`` as ``--views``'
        text; ``settings`` are the options that are fields already (provider, batch_size,
        workers, pool, decode, threads, shard_size, engine, precision)."""
        from fstore.images.views import parse_views
        from fstore.store import default_store_path

        names = tuple(name for item in layers for name in item)
        return cls(
            store=store or default_store_path(),
            images=images,
            layers=names or None,
            weights=WeightsSource.parse(weights, seed) if weights else None,
            model=model,
            preprocessing=preprocessing.standalone() if preprocessing else None,
            flags=preprocessing,
            dtype="float16" if float16 else "float32",
            split=SplitSpec("random", train_per_class, split_seed) if train_per_class else None,
            ray=RayOptions(
                address=address,
                num_workers=num_workers,
                cpus_per_worker=cpus_per_worker,
                gpus_per_worker=gpus_per_worker,
                workers_write=workers_write,
            ),
            views=parse_views(views or ""),
            **settings,
        )
