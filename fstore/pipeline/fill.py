"""``fstore build``: image folder → batched model runs → shards → catalog.

The build is a composition of stages, one module each:

* **plan** (:mod:`.plan`): the store's manifest (what decides its features) and the shards to
  compute, saved before work starts so a killed build resumes the same plan;
* **read** (:mod:`.pipeline`, over :mod:`fstore.images`): decode threads turn files into uint8
  NHWC batches in reused buffers, a few batches ahead;
* **run** (:mod:`.run`): each batch through the backend, gathered into shards;
* **write** (:mod:`.write`): a writer thread writes each finished shard and commits it to the
  store's catalog; the view ``fstore.h5`` is refreshed at the end.

The model arrives resolved (:class:`ResolvedModel`): a ``--model`` file, the one the store
remembers, or (through :func:`fstore.pipeline.model.build_store`) a VGG16 export.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fstore.errors import FstoreError, ModelError, StoreError
from fstore.fsutil import peak_rss_mib
from fstore.images.decode import DECODE_MODES
from fstore.images.discover import Discovery, discover
from fstore.images.preprocess import Preprocessing
from fstore.images.views import (
    SEPARATOR,
    ViewPlan,
    parse_views,
    plan_views,
    split_layers,
    view_layers,
)
from fstore.pipeline.config import DEFAULT_DECODE, DTYPES, BuildConfig
from fstore.pipeline.plan import (
    ResolvedModel,
    StoreRecipe,
    check_compatible,
    model_sha256,
    new_manifest,
    plan_work,
    recipe_manifest,
)
from fstore.pipeline.ray_engine import RayOptions
from fstore.pipeline.read import Work, default_workers
from fstore.pipeline.run import RunOptions, StageTimes, layer_dims, probe_shapes, run_local
from fstore.pipeline.write import Writer
from fstore.store import layout
from fstore.store.catalog import DAMAGE, connect
from fstore.store.compact import clean_store, compact_locked
from fstore.store.lock import StoreLock, prepare_store
from fstore.store.reads import damaged_catalog
from fstore.store.repair import catalog_lost, rebuild_catalog

logger = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What a build did and how long each stage took (seconds)."""

    store: str
    provider: str
    layers: tuple[str, ...]
    images_total: int = 0
    images_done_before: int = 0
    images_computed: int = 0
    errors: int = 0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    shards_written: int = 0
    removed: int = 0
    precision: str = ""
    seconds: float = 0.0
    decode_seconds: float = 0.0
    inference_seconds: float = 0.0
    write_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    store_bytes: int = 0
    workers: int = 0
    decode: str = DEFAULT_DECODE
    views: tuple[str, ...] = ()
    #: per view set (and ``plain``): views per image, model seconds, model images/s
    view_costs: dict[str, dict] = field(default_factory=dict)

    def absorb(self, times: StageTimes) -> None:
        self.decode_seconds += times.decode
        self.inference_seconds += times.inference
        self.images_computed += times.images
        self.errors += times.errors
        self.view_costs = times.view_costs or self.view_costs
        for k, v in times.errors_by_reason.items():
            self.errors_by_reason[k] = self.errors_by_reason.get(k, 0) + v

    @property
    def images_per_second(self) -> float:
        return self.images_computed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["images_per_second"] = self.images_per_second
        return data


def check_config(config: BuildConfig) -> None:
    """Refuse options that cannot work, before anything is written."""
    if config.dtype not in DTYPES:
        raise FstoreError(
            f"unknown storage dtype {config.dtype!r}; choose from {', '.join(DTYPES)}"
        )
    if config.engine not in ("local", "ray"):
        raise FstoreError(f"unknown engine {config.engine!r}; choose local or ray")
    if config.decode is not None and config.decode not in DECODE_MODES:
        raise FstoreError(f"unknown decode mode {config.decode!r}; choose exact or fast")
    if config.batch_size < 1 or config.shard_size < 1:
        raise FstoreError("--batch-size and --shard-size must be at least 1")
    if config.ray is not None and config.ray.workers_write and config.engine != "ray":
        raise FstoreError("--workers-write needs --engine ray (Ray actors write the shard files)")
    parse_views(config.views)
    if config.engine == "ray":
        from fstore.pipeline.ray_engine import import_ray

        import_ray()


def existing_manifest(store: Path) -> layout.Manifest | None:
    """The manifest of the store at ``store``; ``None`` if there is none yet."""
    manifest = layout.read_manifest(store) if layout.sidecar(store).exists() else None
    if store.exists() and manifest is None:
        raise StoreError(f"{store} exists but is not an fstore store; refusing to overwrite it")
    return manifest


def image_folder(config: BuildConfig, manifest: layout.Manifest | None) -> Path:
    """The folder to build from: the one given, else the store's."""
    images = config.images or (Path(manifest.image_root) if manifest else None)
    if images is None:
        raise FstoreError(f"no image folder given and no store at {config.store} to take it from")
    return images


def requested_preprocessing(config: BuildConfig, manifest: layout.Manifest | None) -> Preprocessing:
    """The options' preprocessing, else the store's, else torchvision's ImageNet default."""
    if config.preprocessing is not None:
        return config.preprocessing
    if manifest is not None and "preprocessing" in manifest.provenance:
        return Preprocessing.from_json(manifest.provenance["preprocessing"])
    return Preprocessing()


def model_layers(config: BuildConfig, manifest: layout.Manifest | None) -> tuple[str, ...] | None:
    """The model layers to run: the ones given, else the store's (without its view layers)."""
    if config.layers:
        return tuple(config.layers)
    return split_layers(manifest.layers)[0] if manifest else None


def requested_views(config: BuildConfig, manifest: layout.Manifest | None) -> tuple[str, ...]:
    """The view sets to store: the ones given, else the store's."""
    if config.views:
        return parse_views(config.views)
    return split_layers(manifest.layers)[1] if manifest else ()


def given_model(config: BuildConfig, manifest: layout.Manifest | None) -> Path | None:
    """The ``--model`` file: the one given, else the one the store was built with."""
    if config.model is not None:
        return config.model
    if manifest is not None and manifest.provenance.get("model_given"):
        return Path(manifest.provenance["model_path"])
    return None


def _recipe(config: BuildConfig, manifest: layout.Manifest | None, model: ResolvedModel):
    decode = config.decode or (manifest.provenance.get("decode") if manifest else None)
    preprocessing = model.info.preprocessing if model.info else None
    return StoreRecipe(
        model=model,
        preprocessing=preprocessing or requested_preprocessing(config, manifest),
        decode=decode or DEFAULT_DECODE,
        dtype=config.dtype,
        split=config.split,
    )


def _load_backend(config: BuildConfig, model: ResolvedModel, preprocessing: Preprocessing,
                  views: int = 1):  # fmt: skip
    """The model's session; ``views`` per image make the device batch that many times longer."""
    from fstore.runtime.session import OrtBackend

    outputs = model.layers or None
    backend = OrtBackend.open(
        model.path,
        config.provider,
        outputs=outputs,
        threads=config.threads,
        preprocessing=preprocessing,
        batch_size=config.batch_size * views,
    )
    fixed = [d for d in backend.session.get_inputs()[0].shape[1:] if isinstance(d, int) and d > 4]
    if fixed and fixed[0] != preprocessing.crop:
        raise ModelError(
            f"model {model.path.name} takes {fixed[0]}x{fixed[0]} pixels, not "
            f"{preprocessing.crop}: pass --size {fixed[0]} (and the --resize, --mean and --std "
            "it was trained with)"
        )
    return backend


@dataclass
class _Job:
    """One build in progress: what it was asked, what it found, and what it reports."""

    config: BuildConfig
    images: Path
    found: Discovery
    model: ResolvedModel
    report: BuildReport
    progress: bool | None
    views: ViewPlan | None = None


def _settle_manifest(config: BuildConfig, manifest: layout.Manifest | None, recipe: StoreRecipe,
                     job: _Job, con):  # fmt: skip
    """Write a new store's manifest or check an old one; returns (manifest, backend or None).

    A new store records the provider, so its model is loaded; an existing one is checked
    without loading it when it holds the layers asked for (a foreign model's shapes are then
    the store's). Each view set's layers are stored layers like the model's: they are in the
    fingerprint, and a store refuses view sets it was not built with as it refuses other layers.
    """
    backend, info, layers = None, recipe.model.info, recipe.model.layers
    held = manifest is not None and bool(layers) and all(n in manifest.shapes for n in layers)
    if manifest is None or (info is None and not held):
        backend = _load_backend(config, recipe.model, recipe.preprocessing)
        layers = layers or tuple(backend.outputs)
    if info is not None and all(layer in info.shapes for layer in layers):
        shapes = {layer: tuple(info.shapes[layer]) for layer in layers}
    elif backend is None:
        shapes = {layer: tuple(manifest.shapes[layer]) for layer in layers}
    else:
        probed = probe_shapes(backend, recipe.preprocessing)
        shapes = {layer: probed[layer] for layer in layers}
    views = requested_views(config, manifest)
    shapes = {name: shapes[name.partition(SEPARATOR)[0]] for name in view_layers(layers, views)}
    if manifest is None:
        fresh = new_manifest(job.images, recipe, shapes, backend.provider)
        layout.write_manifest(config.store, fresh)
        return fresh, backend
    # an fstore export's fingerprint names its weights, a foreign model's its file's sha256
    sha = "" if info is not None else model_sha256(con, config.store, manifest, recipe.model.path)
    check_compatible(config.store, manifest, recipe_manifest(job.images, recipe, shapes, sha),
                     config.images)  # fmt: skip
    if config.split is not None and asdict(config.split) != manifest.split:
        raise StoreError(f"store {config.store} was built with split {manifest.split}")
    return manifest, backend


def _compute(job: _Job, recipe: StoreRecipe, work: Work, writer: Writer, backend) -> None:
    """Run the pending shards here or on Ray, handing them to ``writer``."""
    config, report = job.config, job.report
    if config.engine == "local":
        options = RunOptions(config.batch_size, report.workers, recipe.decode, job.progress,
                             config.pool, views=job.views,
                             max_image_bytes=config.max_image_bytes)  # fmt: skip
        report.absorb(run_local(work, backend, recipe.preprocessing, options, writer))
        return
    from fstore.pipeline import ray_engine

    manifest = writer.manifest
    config = replace(config, workers=report.workers, decode=recipe.decode, views=report.views)
    layers = split_layers(manifest.layers)[0]
    report.provider = ray_engine.run(
        work, model_path=recipe.model.path, layers=layers, dims=layer_dims(manifest),
        preprocessing=recipe.preprocessing, config=config,
        writer=writer, report=report, options=config.ray or RayOptions(),
        progress=job.progress,
    )  # fmt: skip


def _provider(config: BuildConfig, manifest: layout.Manifest, backend, pending: int) -> str:
    """The provider that runs the model; with nothing to compute, ``auto`` is the one that
    computed the store (finding out would import ONNX Runtime for nothing)."""
    if backend is not None:
        return backend.provider
    if not pending and config.provider == "auto" and manifest.provenance.get("provider"):
        return manifest.provenance["provider"]
    if config.engine == "local":
        from fstore.runtime.providers import resolve_provider

        return resolve_provider(config.provider)
    return config.provider


def _fill(job: _Job, manifest: layout.Manifest | None, con) -> None:
    """Plan, then read → run → write the pending shards; the store must be locked."""
    config, report, model = job.config, job.report, job.model
    recipe = _recipe(config, manifest, model)
    views = requested_views(config, manifest)
    job.views = plan_views(views, recipe.preprocessing) if views else None
    manifest, backend = _settle_manifest(config, manifest, recipe, job, con)
    plan = plan_work(config.store, con, job.found, config.shard_size, manifest)
    work = plan.work
    report.images_total, report.images_done_before = work.total, work.done_before
    report.precision = manifest.provenance.get("precision", "unknown")
    report.layers, report.decode, report.removed = (
        tuple(manifest.layers),
        recipe.decode,
        plan.removed,
    )
    report.views = views
    if work.pending and backend is None and config.engine == "local":
        model = replace(model, layers=split_layers(manifest.layers)[0])
        count = len(job.views.views) if job.views else 1
        backend = _load_backend(config, model, recipe.preprocessing, count)
    report.provider = _provider(config, manifest, backend, work.pending)
    if work.pending:
        where = "" if config.engine == "local" else " (ray engine)"
        logger.info(
            f"computing {work.pending} images ({', '.join(manifest.layers)}) on "
            f"{report.provider.upper()} with {model.path.name}, decode {recipe.decode}, "
            f"{report.workers} workers{where}"
        )
    if work.pending and manifest.provenance.get("provider") != report.provider:
        manifest = replace(
            manifest, provenance={**manifest.provenance, "provider": report.provider}
        )
        layout.write_manifest(config.store, manifest)
    writer = Writer(config.store, manifest, con)
    try:
        if work.pending:
            _compute(job, recipe, work, writer, backend)
    finally:
        writer.close()
    # merges small shard files into segments once there are many, and refreshes the view
    start = time.perf_counter()
    compact_locked(config.store, con, manifest)
    report.write_seconds = writer.seconds + time.perf_counter() - start
    report.shards_written = writer.shards_written


def _fill_locked(job: _Job, manifest: layout.Manifest | None) -> None:
    """Clean what an interrupted writer left, then fill the store (whose lock is held)."""
    store = job.config.store
    with closing(connect(store, write=True)) as con:
        try:
            removed = clean_store(store, con)
            if removed:
                logger.info("removed %d file(s) left by an interrupted build", removed)
            _fill(job, manifest, con)
        except DAMAGE as exc:
            raise damaged_catalog(store, exc) from None


def fill_store(
    config: BuildConfig,
    model: ResolvedModel,
    progress: bool | None = None,
    found: Discovery | None = None,
) -> BuildReport:
    """Fill (or extend, or resume) the store ``config.store``; returns what was done.

    ``model``: the resolved model (:func:`fstore.pipeline.model.build_store` resolves it from
    the config, and is the function to call with a config alone). ``progress``: show a
    progress bar (``None``: only on a terminal). ``found``: the image folder as the caller
    already discovered it (walking 100,000 files is most of a rebuild with nothing to do).
    """
    start = time.perf_counter()
    check_config(config)
    manifest = existing_manifest(config.store)
    images = image_folder(config, manifest)
    if found is None:
        found = discover(images)  # checks the folder before anything is written
    report = BuildReport(str(config.store), "", model.layers, skipped=found.skipped,
                         workers=config.workers or default_workers())  # fmt: skip
    new = not layout.sidecar(config.store).exists()
    prepare_store(config.store)
    try:
        with StoreLock(config.store):
            if manifest is not None and catalog_lost(config.store):
                keys = set(found.keys)
                logger.warning(rebuild_catalog(config.store, manifest, keys))
            _fill_locked(_Job(config, images, found, model, report, progress), manifest)
    except BaseException:
        if new and layout.read_manifest(config.store) is None:  # refused before it held anything
            shutil.rmtree(layout.sidecar(config.store), ignore_errors=True)
        raise
    report.seconds = time.perf_counter() - start
    report.peak_rss_mib = peak_rss_mib()
    report.store_bytes = layout.store_bytes(config.store)
    return report
