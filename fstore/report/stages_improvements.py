"""The report's Improvements section: every improvement the store's layers allow, trained by
:func:`fstore.classifiers.improvements.try_improvements`, with what each costs to build.

The build cost of a row is measured, not guessed: :func:`build_costs` builds the layers a row
needs (the plain layers, and its view sets) over the same sample of the store's images, one
build per view set, and reports each build's images/s and its time against the plain build's.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from fstore.images.discover import SplitSpec
from fstore.report.context import Context

logger = logging.getLogger(__name__)
PLAIN = "plain"


def copy_sample(ctx: Context, count: int, out: Path) -> int:
    """``count`` of the store's images, evenly spread over its sorted keys, copied into ``out``
    under their keys (so the folder keeps its classes and its train/test layout)."""
    keys = sorted(str(k) for k in ctx.features.keys)
    chosen = np.unique(np.linspace(0, len(keys) - 1, min(count, len(keys))).round().astype(int))
    for index in chosen:
        target = out / keys[index]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ctx.image_root / keys[index], target)
    return len(chosen)


def _sample_build(ctx: Context, images: Path, store: Path, views: tuple[str, ...]) -> dict:
    """The library's build of the plain layers and ``views`` over ``images``; its report."""
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    config = ctx.config
    options = dict(
        store=store,
        images=images,
        layers=ctx.plain_layers,
        provider=config.provider,
        batch_size=config.batch_size,
        threads=config.threads,
        split=SplitSpec(**ctx.manifest.split),
        views=views,
    )
    if config.model is None:
        model = dict(weights=config.vgg16_weights, preprocessing=config.vgg16_preprocessing())
    else:
        model = dict(model=config.model, preprocessing=ctx.preprocessing)
    return build_store(BuildConfig(**model, **options)).to_dict()


def build_costs(ctx: Context, view_sets: list[tuple[str, ...]], folder: Path) -> dict[str, dict]:
    """Per tuple of view sets (named by joining them with commas; ``plain`` for none): images
    built, seconds, images/s, and seconds against the plain build's, over one sample of
    ``config.cost_images`` images."""
    images = folder / "sample"
    count = copy_sample(ctx, ctx.config.cost_images, images)
    costs: dict[str, dict] = {}
    for views in ((), *view_sets):
        name = ",".join(views) or PLAIN
        logger.info(f"  build cost of {name}: {count} images")
        store = folder / f"cost-{len(costs)}.h5"
        built = _sample_build(ctx, images, store, views)
        costs[name] = {
            "images": built["images_computed"],
            "seconds": built["seconds"],
            "images_per_second": built["images_per_second"],
        }
        for leftover in folder.glob(f"{store.name}*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    shutil.rmtree(images)
    for row in costs.values():
        row["times_plain"] = row["seconds"] / costs[PLAIN]["seconds"]
    return costs


def improvements(ctx: Context, folder: Path) -> dict:
    """Every improvement of :func:`improvements_for` on the store's layers: test accuracy on
    the store's split, mean ± std over the K random splits, change against the baseline, build
    cost and training seconds; one bar chart."""
    from fstore.classifiers.improvements import improvements_for, try_improvements
    from fstore.classifiers.outputs import improvements_figure
    from fstore.report.stages_classifiers import split_protocol, svm_options

    candidates = improvements_for(ctx.layers, ctx.main_layer)
    protocol = split_protocol(ctx)

    def progress(row) -> None:
        logger.info(f"  {row.improvement.name}: {row.standard.accuracy_mean:.4f}")

    result = try_improvements(ctx.store, candidates, svm_options(ctx), protocol, on_row=progress)
    improvements_figure(folder / "improvements.png", result)
    view_sets = list(dict.fromkeys(c.views for c in candidates if c.views))
    costs = build_costs(ctx, view_sets, folder)
    data = result.to_dict()
    for row in data["rows"]:
        row["build"] = costs[",".join(row["views"]) or PLAIN]
    return {**data, "costs": costs, "figures": {"chart": "improvements.png"}}
