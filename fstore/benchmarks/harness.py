"""``fstore bench`` as one library call: :func:`run_bench` composes the views of a benchmark.

plan → prepare (images, models, the eager variant probe, specs) → systems, machine and GEMM
peaks → model view → end to end → pipeline → memory → fidelity → ratios and targets, each stage
timed (:class:`~fstore.benchmarks.result.Stage`). The parts live in their modules:
:mod:`.systems` (what is timed and how it is built), :mod:`.views` (how it is timed),
:mod:`.statistics` (medians, spreads, ratios), :mod:`.result` and :mod:`.report`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fstore.benchmarks import systems, views
from fstore.benchmarks.config import BenchConfig
from fstore.benchmarks.eager import LoaderOptions
from fstore.benchmarks.result import (
    BenchResult,
    Stage,
    evaluate_targets,
    measurement_notes,
    notes_for,
)
from fstore.benchmarks.statistics import BASELINE, add_fractions, add_ratios
from fstore.images.preprocess import Preprocessing, for_options

logger = logging.getLogger(__name__)


@contextmanager
def timed(stages: list[Stage], name: str) -> Iterator[Stage]:
    """Time the ``with`` block as stage ``name`` (appended to ``stages``); the block may set
    the stage's ``cached``."""
    stage = Stage(name)
    start = time.perf_counter()
    try:
        yield stage
    finally:
        stage.seconds = time.perf_counter() - start
        stages.append(stage)


@dataclass(frozen=True)
class Plan:
    """What the run will time, decided before anything heavy happens; the VGG16 systems are
    known once the eager variant probe has run (:func:`prepare`)."""

    provider: str
    precisions: tuple[str, ...]
    threads: int
    prep: Preprocessing
    systems: list[systems.System]
    pipeline: list[systems.System]


@dataclass
class Prepared:
    """The run's images, models and the specs that make each system."""

    work: Path
    image_set: Any
    warm_set: Any
    models: dict[str, Path]
    specs: dict[str, systems.BackendSpec]
    e2e_specs: dict[str, systems.EndToEndSpec]
    pipeline_specs: dict[str, systems.EndToEndSpec]
    probe: Any = None  # variants.Probe, when VGG16 runs
    inputs: np.ndarray | None = None


def plan(config: BenchConfig) -> Plan:
    """Provider, precisions, threads and the systems of each view."""
    from fstore.benchmarks.machine import usable_cores
    from fstore.runtime.providers import resolve_provider

    provider = resolve_provider(config.provider)
    precisions = tuple(config.precisions or systems.default_precisions(provider))
    return Plan(
        provider=provider,
        precisions=precisions,
        threads=config.threads or usable_cores(),
        prep=for_options(config.input_size),
        systems=[],
        pipeline=systems.pipeline_systems(config.workers) if "pipeline" in config.views else [],
    )


def export_models(config: BenchConfig, p: Plan, stages: list[Stage]) -> dict[str, Path]:
    """The ONNX model of each precision: exported (or cached) fp32, then its variants."""
    from fstore.export.onnx_export import export
    from fstore.export.precision import export_variant

    logger.info("exporting VGG16 up to %s (%s)", config.layer, config.weights.origin)
    with timed(stages, "export fp32") as stage:
        base = export((config.layer,), config.weights, preprocessing=p.prep)
        stage.cached = base.from_cache
    models = {"fp32": base.path}
    calibration = config.calibration or config.images
    for precision in p.precisions:
        if precision == "fp32":
            continue
        logger.info("making the %s variant", precision)
        with timed(stages, f"{precision} variant") as stage:
            variant = export_variant(
                base, precision, calibration=calibration, calibration_count=config.calibration_count
            )
            stage.cached = variant.from_cache
        models[precision] = variant.path
    return models


def _vgg16_specs(
    config: BenchConfig, p: Plan, run: Prepared, stages: list[Stage]
) -> tuple[dict[str, systems.BackendSpec], Any]:
    """Each VGG16 system's backend spec, and the probe that chose the eager variant.

    Eager systems load the weights saved into the work folder.
    """
    from fstore.benchmarks.eager import EagerBackend, candidates, save_state_dict
    from fstore.benchmarks.inputs import model_inputs
    from fstore.benchmarks.variants import PROBE_BATCH, probe_variants
    from fstore.export.weights_loader import load_vgg16

    logger.info("loading eager VGG16 (%s)", config.weights.origin)
    with timed(stages, "eager weights"):
        full, _ = load_vgg16(config.weights)
        module = EagerBackend.from_model(full, (config.layer,))
        state = save_state_dict(module, run.work / "eager.pt")
        del full, module  # each eager system loads its own copy from the file, as ORT does
    common = {
        "layers": (config.layer,),
        "provider": p.provider,
        "threads": p.threads,
        "preprocessing": p.prep,
    }

    def eager(variant: str) -> systems.BackendSpec:
        return systems.BackendSpec("eager", state, variant=variant, **common)

    with timed(stages, "eager variant probe"):
        batch = model_inputs(run.image_set, PROBE_BATCH, p.prep)
        probe = probe_variants(lambda v: eager(v).make(), candidates(p.provider), batch)
    specs = {BASELINE: eager("fp32"), "eager-best": eager(probe.chosen)}
    for precision, path in run.models.items():
        specs[f"ort-{precision}"] = systems.BackendSpec("ort", path, variant=precision, **common)
    return specs, probe


def pipeline_specs(p: Plan, work: Path, loader: LoaderOptions) -> dict[str, systems.EndToEndSpec]:
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
        "loader-noop": systems.EndToEndSpec(systems.BackendSpec("noop", None, **common), loader),
        "build-noop": systems.EndToEndSpec(systems.BackendSpec("ort", pixels, **common), loader),
        "build-noop-norm": systems.EndToEndSpec(
            systems.BackendSpec("ort", normalised, **common), loader
        ),
    }


def prepare(config: BenchConfig, p: Plan, work: Path, stages: list[Stage]) -> Prepared:
    """The images (and a few to warm up on), the ONNX models, the eager variant and every
    system's spec."""
    from fstore.benchmarks.inputs import prepare_images

    with timed(stages, "images"):
        image_set = prepare_images(
            work, p.prep, config.images, config.synthetic, config.limit, config.seed
        )
        warm = min(image_set.count, config.e2e_batch)
        warm_set = prepare_images(
            work / "warm", p.prep, image_set.root, limit=warm, seed=config.seed
        )
    # DataLoader workers start as they would in this process, also in a measuring one
    start_method = multiprocessing.get_start_method()
    loader = LoaderOptions(p.prep, config.e2e_batch, config.workers, start_method)
    run = Prepared(
        work=work,
        image_set=image_set,
        warm_set=warm_set,
        models={},
        specs={},
        e2e_specs={},
        pipeline_specs={},
    )
    if config.runs_vgg16:
        run.models = export_models(config, p, stages)
        run.specs, run.probe = _vgg16_specs(config, p, run, stages)
    run.e2e_specs = {sid: systems.EndToEndSpec(spec, loader) for sid, spec in run.specs.items()}
    run.pipeline_specs = pipeline_specs(p, work, loader) if p.pipeline else {}
    return run


def vgg16_systems(config: BenchConfig, p: Plan, run: Prepared) -> Plan:
    """The plan with its VGG16 systems, the eager variant chosen by the probe among them."""
    if not config.runs_vgg16:
        return p
    return replace(p, systems=systems.make_systems(p.provider, p.precisions, run.probe.chosen))


def measure_peaks(config: BenchConfig, p: Plan, stages: list[Stage]) -> dict[str, dict]:
    """The GEMM peak of each arithmetic the VGG16 systems run in (cached between runs)."""
    from fstore.benchmarks.peaks import gemm_peaks

    kinds = tuple(dict.fromkeys(s.arithmetic for s in p.systems if s.arithmetic))
    if not kinds:  # the pipeline view alone does no arithmetic worth a peak
        return {}
    with timed(stages, "GEMM peaks") as stage:
        found = gemm_peaks(
            p.provider,
            config.gemm_size,
            config.peak_seconds,
            p.threads,
            kinds=kinds,
            remeasure=config.remeasure_peaks,
        )
        stage.cached = all(peak.from_cache for peak in found.values())
    return {k: asdict(v) for k, v in found.items()}


def _new_result(
    config: BenchConfig, p: Plan, run: Prepared, started: str, stages: list[Stage]
) -> BenchResult:
    from fstore.benchmarks.machine import machine_info

    machine = machine_info()
    peaks = measure_peaks(config, p, stages)
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
        macs_per_image=systems.macs_up_to(config.layer, config.input_size),
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
        stages=stages,
        eager_probe=asdict(run.probe) if run.probe else None,
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
    for view, timed_systems, specs in (
        ("e2e", p.systems, run.e2e_specs),
        ("pipeline", p.pipeline, run.pipeline_specs),
    ):
        if view not in config.views:
            continue
        workdir = run.work / view
        workdir.mkdir()
        how = views.Rounds(view, config.e2e_batch, config.e2e_repeats, workdir, run.warm_set)
        with timed(result.stages, f"{view} view"):
            rows, first = views.whole_runs(
                timed_systems, {sid: spec.run for sid, spec in specs.items()}, run.image_set, how
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
    from fstore.classifiers.fidelity import accuracy_change
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
    from fstore.export.architectures import require_torch

    config.check()
    require_torch()  # the eager side is half of every view
    import torch

    started = time.perf_counter()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    p = plan(config)
    torch.set_num_threads(p.threads)
    stages: list[Stage] = []
    with tempfile.TemporaryDirectory(prefix="fstore-bench-", dir=workdir) as tmp:
        run = prepare(config, p, Path(tmp), stages)
        p = vgg16_systems(config, p, run)
        result = _new_result(config, p, run, stamp, stages)
        if "model" in config.views:
            with timed(stages, "model view"):
                run_model_view(config, p, run, result)
        run_whole_views(config, p, run, result)
        if config.memory == "subprocess":
            with timed(stages, "memory"):
                run_memory(config, p, run, result)
        with timed(stages, "fidelity"):
            run_fidelity(config, p, run, result)
    add_ratios(result.all_rows)
    arithmetic = {s.id: s.arithmetic for s in result.systems}
    beaten = add_fractions(result.all_rows, arithmetic, result.peaks, result.flops_per_image)
    targets = evaluate_targets(result)
    result.targets = [t for t in targets if set(t["views"]) & set(config.views)]
    result.notes.extend(notes_for(result, p.precisions, config.memory))
    result.notes.extend(measurement_notes(result, beaten))
    result.seconds = time.perf_counter() - started
    return result
