"""``fstore bench`` as one library call: :func:`run_bench` composes the views of a benchmark.

plan (systems, machine, GEMM peaks) → prepare (images, models, specs) → model view → end to
end → pipeline → memory → fidelity → ratios and targets. The parts live in their modules:
:mod:`.systems` (what is timed and how it is built), :mod:`.views` (how it is timed),
:mod:`.statistics` (medians, spreads, ratios), :mod:`.result` and :mod:`.report`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fstore.benchmarks import systems as sy
from fstore.benchmarks import views
from fstore.benchmarks.config import BenchConfig
from fstore.benchmarks.eager import LoaderOptions
from fstore.benchmarks.result import BenchResult, evaluate_targets, notes_for
from fstore.benchmarks.statistics import BASELINE, add_fractions, add_ratios
from fstore.images.preprocess import Preprocessing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What the run will time, decided before anything heavy happens."""

    provider: str
    precisions: tuple[str, ...]
    threads: int
    prep: Preprocessing
    systems: list[sy.System]
    pipeline: list[sy.System]


@dataclass
class Prepared:
    """The run's images, models and the specs that make each system."""

    work: Path
    image_set: Any
    warm_set: Any
    models: dict[str, Path]
    specs: dict[str, sy.BackendSpec]
    e2e_specs: dict[str, sy.EndToEndSpec]
    pipeline_specs: dict[str, sy.EndToEndSpec]
    inputs: np.ndarray | None = None


def plan(config: BenchConfig) -> Plan:
    """Provider, precisions, threads and the systems of each view."""
    from fstore.benchmarks.machine import usable_cores
    from fstore.runtime.providers import resolve_provider

    provider = resolve_provider(config.provider)
    precisions = tuple(config.precisions or sy.default_precisions(provider))
    return Plan(
        provider=provider,
        precisions=precisions,
        threads=config.threads or usable_cores(),
        prep=sy.preprocessing_for(config.input_size),
        systems=sy.make_systems(provider, precisions) if config.runs_vgg16 else [],
        pipeline=sy.pipeline_systems(config.workers) if "pipeline" in config.views else [],
    )


def _vgg16_specs(config: BenchConfig, p: Plan, work: Path, models: dict[str, Path]) -> dict:
    """Each VGG16 system's backend spec; eager systems load the weights saved here."""
    from fstore.benchmarks.eager import EagerBackend, save_state_dict
    from fstore.export.weights import load_vgg16

    logger.info("loading eager VGG16 (%s)", config.weights.origin)
    full, _ = load_vgg16(config.weights)
    state = save_state_dict(EagerBackend.from_model(full, (config.layer,)), work / "eager.pt")
    del full  # each eager system loads its own copy from the file, as ONNX Runtime does
    common = {
        "layers": (config.layer,),
        "provider": p.provider,
        "threads": p.threads,
        "preprocessing": p.prep,
    }
    specs = {
        BASELINE: sy.BackendSpec("eager", state, variant="fp32", **common),
        "eager-best": sy.BackendSpec("eager", state, variant="best", **common),
    }
    for precision, path in models.items():
        specs[f"ort-{precision}"] = sy.BackendSpec("ort", path, variant=precision, **common)
    return specs


def pipeline_specs(p: Plan, work: Path, loader: LoaderOptions) -> dict[str, sy.EndToEndSpec]:
    """The pipeline systems' specs; the no-op ONNX model is written into ``work``."""
    from fstore.benchmarks.pipeline import NOOP_OUTPUT, write_noop_model

    normalised = write_noop_model(work / "noop.onnx")
    pixels = write_noop_model(work / "noop-pixels.onnx", pixels=True)
    common = {
        "layers": (NOOP_OUTPUT,),
        "provider": p.provider,
        "threads": p.threads,
        "preprocessing": p.prep,
    }
    return {
        "loader-noop": sy.EndToEndSpec(sy.BackendSpec("noop", None, **common), loader),
        "build-noop": sy.EndToEndSpec(sy.BackendSpec("ort", pixels, **common), loader),
        "build-noop-norm": sy.EndToEndSpec(sy.BackendSpec("ort", normalised, **common), loader),
    }


def prepare(config: BenchConfig, p: Plan, work: Path) -> Prepared:
    """The images (and a few to warm up on), the ONNX models and every system's spec."""
    from fstore.benchmarks import inputs as inp

    image_set = inp.prepare_images(
        work, p.prep, config.images, config.synthetic, config.limit, config.seed
    )
    warm = min(image_set.count, config.e2e_batch)
    warm_set = inp.prepare_images(
        work / "warm", p.prep, image_set.root, limit=warm, seed=config.seed
    )
    models, specs = {}, {}
    if config.runs_vgg16:
        models = sy.export_models(config, p.precisions, p.prep)
        specs = _vgg16_specs(config, p, work, models)
    # DataLoader workers start as they would in this process, also in a measuring one
    start_method = multiprocessing.get_start_method()
    loader = LoaderOptions(p.prep, config.e2e_batch, config.workers, start_method)
    e2e_specs = {sid: sy.EndToEndSpec(spec, loader) for sid, spec in specs.items()}
    pipeline = pipeline_specs(p, work, loader) if p.pipeline else {}
    return Prepared(
        work=work,
        image_set=image_set,
        warm_set=warm_set,
        models=models,
        specs=specs,
        e2e_specs=e2e_specs,
        pipeline_specs=pipeline,
    )


def _new_result(config: BenchConfig, p: Plan, run: Prepared, started: str) -> BenchResult:
    from fstore.benchmarks.machine import gemm_peaks, machine_info

    machine = machine_info()
    peaks = {}
    if config.runs_vgg16:  # the pipeline view alone does no arithmetic worth a peak
        found = gemm_peaks(p.provider, config.gemm_size, config.peak_seconds, p.threads)
        peaks = {k: asdict(v) for k, v in found.items()}
    config_dict = asdict(config)
    config_dict.update(
        precisions=list(p.precisions),
        threads=p.threads,
        e2e_batch_size=config.e2e_batch,
        weights=config.weights.origin,
    )
    return BenchResult(
        started=started,
        seconds=0.0,
        config=json.loads(json.dumps(config_dict, default=str)),
        machine=machine,
        provider=p.provider,
        layer=config.layer,
        input_size=config.input_size,
        macs_per_image=sy.macs_up_to(config.layer, config.input_size),
        peaks=peaks,
        systems=p.systems + p.pipeline,
        images={
            "source": run.image_set.source,
            "count": run.image_set.count,
            "description": run.image_set.describe(),
            "origin": str(run.image_set.origin) if run.image_set.origin else None,
        },
        models={precision: str(path) for precision, path in run.models.items()},
        notes=_busy_note(machine),
    )


def _busy_note(machine: dict) -> list[str]:
    load = machine.get("load_average") or []
    if load and load[0] > 0.5 * machine["usable_cores"]:
        return [
            f"The machine was busy when the run started (load average {load[0]:.1f} "
            f"on {machine['usable_cores']} cores): timings are pessimistic and noisy."
        ]
    return []


def run_model_view(config: BenchConfig, p: Plan, run: Prepared, result: BenchResult) -> None:
    from fstore.benchmarks.inputs import model_inputs
    from fstore.export.precision import compare_features

    run.inputs = model_inputs(run.image_set, max(config.batch_sizes), p.prep)
    rows, feats = views.model_view(
        p.systems,
        {sid: spec.make for sid, spec in run.specs.items()},
        run.inputs,
        batch_sizes=config.batch_sizes,
        repeats=config.repeats,
        warmup=config.warmup,
        min_images=config.min_images or max(config.batch_sizes),
    )
    result.model_rows = rows
    result.fidelity["model_view"] = {
        s.id: compare_features(feats[BASELINE], feats[s.id])[config.layer]
        for s in p.systems
        if s.id != BASELINE
    }


def run_whole_views(config: BenchConfig, p: Plan, run: Prepared, result: BenchResult) -> None:
    """The end-to-end and pipeline views: whole runs from image files to feature files."""
    from fstore.benchmarks.inputs import warm_file_cache

    warm_file_cache(run.image_set)
    for view, systems, specs in (
        ("e2e", p.systems, run.e2e_specs),
        ("pipeline", p.pipeline, run.pipeline_specs),
    ):
        if view not in config.views:
            continue
        workdir = run.work / view
        workdir.mkdir()
        how = views.Rounds(view, config.e2e_batch, config.e2e_repeats, workdir, run.warm_set)
        rows, first = views.whole_runs(
            systems, {sid: spec.run for sid, spec in specs.items()}, run.image_set, how
        )
        if view == "e2e":
            result.e2e_rows = rows
            result.fidelity["e2e_agreement"] = views.agreement(first, config.layer)
        else:
            result.pipeline_rows = rows


def run_memory(config: BenchConfig, p: Plan, run: Prepared, result: BenchResult) -> None:
    """Each system's peak memory in a fresh process, in every view it was timed in."""
    from fstore.benchmarks.inputs import model_inputs

    probes = []
    for view, specs in (
        ("model", run.specs),
        ("e2e", run.e2e_specs),
        ("pipeline", run.pipeline_specs),
    ):
        if view in config.views:
            probes += [views.MemoryProbe(view, sid, spec) for sid, spec in specs.items()]
    if run.inputs is None and "model" in config.views:
        run.inputs = model_inputs(run.image_set, max(config.batch_sizes), p.prep)
    inputs = run.work / "inputs.npy"
    np.save(inputs, run.inputs if run.inputs is not None else np.zeros((1, 1, 1, 3), np.uint8))
    memory = views.measure_memory(
        probes, inputs, config.batch_sizes, run.warm_set, p.provider == "cuda"
    )
    views.apply_memory(result.all_rows, memory)


def run_fidelity(config: BenchConfig, p: Plan, run: Prepared, result: BenchResult) -> None:
    """Each precision's fidelity at export, and its SVM accuracy change if asked."""
    from fstore.benchmarks.fidelity import accuracy_change
    from fstore.export.precision import read_fidelity

    result.fidelity["export"] = {
        precision: read_fidelity(path)
        for precision, path in run.models.items()
        if precision != "fp32"
    }
    if config.fidelity_images is None or not run.models:
        return
    result.fidelity["svm"] = {
        precision: accuracy_change(
            run.models["fp32"],
            run.models[precision],
            config.fidelity_images,
            p.prep,
            layer=config.layer,
            per_class=config.fidelity_per_class,
            provider=p.provider,
            seed=config.seed,
        )
        for precision in p.precisions
        if precision != "fp32"
    }


def run_bench(config: BenchConfig, workdir: Path | None = None) -> BenchResult:
    """Run every view of the benchmark described by ``config``; returns what was measured.

    Temporary files (generated images, stores, the eager weights, the no-op model) live in a
    folder under ``workdir`` (the system's temporary folder by default), removed at the end.
    Progress goes to this package's loggers.
    """
    from fstore.export.weights import require_torch

    config.check()
    require_torch()  # the eager side is half of every view
    import torch

    started = time.perf_counter()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    p = plan(config)
    torch.set_num_threads(p.threads)
    with tempfile.TemporaryDirectory(prefix="fstore-bench-", dir=workdir) as tmp:
        run = prepare(config, p, Path(tmp))
        result = _new_result(config, p, run, stamp)
        if "model" in config.views:
            run_model_view(config, p, run, result)
        run_whole_views(config, p, run, result)
        if config.memory == "subprocess":
            run_memory(config, p, run, result)
        run_fidelity(config, p, run, result)
    add_ratios(result.all_rows)
    arithmetic = {s.id: s.arithmetic for s in result.systems}
    add_fractions(result.all_rows, arithmetic, result.peaks, result.flops_per_image)
    targets = evaluate_targets(result)
    result.targets = [t for t in targets if set(t["views"]) & set(config.views)]
    result.notes.extend(notes_for(result, p.precisions, config.memory))
    result.seconds = time.perf_counter() - started
    return result
