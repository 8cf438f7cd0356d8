"""``run_report``: build the store if needed, run every stage (cached), write the page.

The steps read as a list: ``build → context → stages (each cached) → provenance → write``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fstore.report import stages_classifiers, stages_improvements, stages_model, stages_quality
from fstore.report.config import ReportConfig
from fstore.report.context import Context
from fstore.report.stage_cache import StageCache, digest

logger = logging.getLogger(__name__)

#: (name, title, function, the options it depends on; ``stored_layers`` is the store's layers,
#: which decide the improvements tried). Order matters: ``precision`` reads the ``svm`` stage's
#: accuracy, ``quality`` its classifier.
STAGES: tuple[tuple[str, str, Callable[[Context, Path], dict], tuple[str, ...]], ...] = (
    ("network", "Network", stages_model.network, ("weights", "input_size")),
    ("predictions", "Sample predictions", stages_model.predictions, ("samples",)),
    ("activations", "Activation maps", stages_model.activations, ("samples",)),
    ("svm", "Classifiers: SVM", stages_classifiers.svm, ("C", "cv", "seed", "pca")),
    ("heads", "Classifiers: heads", stages_classifiers.heads, ("hidden", "seed")),
    ("pca", "PCA", stages_classifiers.pca, ("pca",)),
    ("layers", "Layer study", stages_classifiers.layers, ("C", "cv", "seed")),
    ("zeroshot", "Zero-shot", stages_classifiers.zeroshot, ("mapping",)),
    (
        "splits",
        "K random splits",
        stages_classifiers.splits,
        ("C", "cv", "seed", "splits", "per_class"),
    ),
    (
        "improvements",
        "Improvements",
        stages_improvements.improvements,
        ("C", "cv", "seed", "splits", "per_class", "cost_images", "stored_layers"),
    ),
    (
        "precision",
        "Precision",
        stages_model.precision,
        ("C", "cv", "seed", "precisions", "calibration_count"),
    ),
    (
        "quality",
        "Data quality",
        stages_quality.quality,
        ("C", "cv", "seed", "pca", "exclude_leaks"),
    ),
)


@dataclass
class Report:
    """What :func:`run_report` produced: the data of every section and the files written."""

    data: dict
    files: dict[str, Path]
    seconds: float


def build_report_store(config: ReportConfig) -> dict:
    """Build (or resume, or extend) the report's store with the library's ``build``."""
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    common = dict(
        store=config.store_path,
        images=config.images,
        layers=config.wanted_layers,
        provider=config.provider,
        batch_size=config.batch_size,
        threads=config.threads,
        views=config.wanted_views,
    )
    if config.model is not None:
        build_config = BuildConfig(model=config.model, preprocessing=config.preprocessing, **common)
    else:
        build_config = BuildConfig(
            weights=config.vgg16_weights, preprocessing=config.vgg16_preprocessing(), **common
        )
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    return build_store(build_config).to_dict()


def make_context(config: ReportConfig) -> Context:
    """The store's manifest, main layer and stage cache (keyed by fingerprint and rows)."""
    from fstore.store import read_manifest, sidecar

    store = config.store_path
    manifest = read_manifest(store)
    cache = StageCache(sidecar(store) / "report", "", config.use_cache)
    ctx = Context(config, store, manifest, cache)
    if config.exclude_leaks:
        from fstore.quality.leaks import leaked_test_keys

        ctx.excluded = leaked_test_keys(store, ctx.main_layer)
    fs = ctx.features
    rows = digest([fs.keys.tolist(), fs.y.tolist(), fs.split.tolist(), list(fs.classes)])
    ctx.cache = StageCache(cache.root, digest([manifest.fingerprint, rows]), config.use_cache)
    return ctx


def _params(ctx: Context, names: tuple[str, ...]) -> dict:
    options = {**asdict(ctx.config), "stored_layers": list(ctx.layers)}
    params = {name: options[name] for name in names}
    if "mapping" in params and params["mapping"]:
        params["mapping_text"] = Path(params["mapping"]).read_text()
    return {**params, "main_layer": ctx.main_layer}


def run_stage(ctx: Context, index: int, stage: tuple) -> dict:
    """One stage, from the cache when its entry exists; one progress line either way."""
    name, title, function, names = stage
    folder = ctx.cache.entry(name, _params(ctx, names))
    prefix = f"[{index}/{len(STAGES)}] {title}"
    cached = ctx.cache.load(folder)
    if cached is not None:
        logger.info(f"{prefix}: cached ({folder.name})")
        return {**cached, "folder": str(folder), "cached": True}
    logger.info(f"{prefix} ...")
    start = time.perf_counter()
    result = function(ctx, ctx.cache.start(folder))
    result["seconds"] = time.perf_counter() - start
    ctx.cache.save(folder, result)
    logger.info(f"{prefix}: done in {result['seconds']:.1f} s")
    return {**result, "folder": str(folder), "cached": False}


def run_report(config: ReportConfig) -> Report:
    """The whole study of ``config.images``: ``report.html``, ``report.md``, ``report.json``."""
    from fstore.report.provenance import provenance
    from fstore.report.render import write_outputs

    start = time.perf_counter()
    logger.info(f"[0/{len(STAGES)}] build: {config.store_path}")
    built = build_report_store(config)
    ctx = make_context(config)
    for index, stage in enumerate(STAGES, start=1):
        ctx.results[stage[0]] = run_stage(ctx, index, stage)
    seconds = time.perf_counter() - start
    data = {
        "title": f"fstore report: {config.images}",
        "store": str(ctx.store),
        "main_layer": ctx.main_layer,
        "classes": list(ctx.features.classes),
        "build": built,
        "sections": ctx.results,
        "provenance": provenance(ctx, seconds, built["seconds"]),
    }
    data["summary"] = summary(data)
    files = write_outputs(data, Path(config.out))
    logger.info(f"report written to {files['html']} in {seconds:.1f} s")
    return Report(data, files, seconds)


def summary(data: dict) -> dict:
    """The headline figures (fractions), each read from its section's library result."""
    s = data["sections"]
    out = {
        "svm_accuracy": s["svm"]["svm"]["accuracy_mean"],
        "linear_head_accuracy": s["heads"]["linear"]["accuracy_mean"],
        "mlp_head_accuracy": s["heads"]["mlp"]["accuracy_mean"],
        "pca_components": s["pca"]["thresholds"],
        "pca_svm_accuracy": s["svm"]["pca_svm"]["accuracy_mean"],
    }
    leak = s["quality"]["leak"]
    if leak.get("available") and leak["accuracy_without"] is not None:
        out["svm_accuracy_without_leaks"] = leak["accuracy_without"]
        out["leaked_test_images"] = leak["leaked"]
    if s["zeroshot"].get("available"):
        out["zeroshot_accuracy"] = s["zeroshot"]["accuracy"]
    if s["splits"].get("available"):
        out["splits"] = {
            "k": len(s["splits"]["fits"]),
            "mean": s["splits"]["accuracy_mean"],
            "std": s["splits"]["accuracy_std"],
        }
    best = next(r for r in s["improvements"]["rows"] if r["name"] == s["improvements"]["best"])
    out["best_improvement"] = {
        "name": best["name"],
        "accuracy": best["accuracy"],
        "change_points": best["change_points"],
    }
    for name, row in s["precision"]["variants"].items():
        out[name] = {
            "change_points": row["change_points"],
            "mean_cosine": row["mean_cosine"],
            "accuracy": row["accuracy"],
        }
    return out
