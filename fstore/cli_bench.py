"""``fstore bench``: time eager PyTorch against fstore's ONNX Runtime sessions.

Parses options into a :class:`fstore.benchmarks.harness.BenchConfig`, calls
:func:`fstore.benchmarks.harness.run_bench` and writes the report. Nothing heavy is imported
until the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fstore.cli_options import (
    echo_err,
    precision_options,
    seed_option,
    weights_option,
    weights_source,
)
from fstore.errors import FstoreError


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{name} takes comma-separated integers, e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{name} takes positive integers, e.g. 1,8,32")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


@click.command()
@click.option(
    "--provider",
    type=click.Choice(["cpu", "cuda", "auto"]),
    default="auto",
    show_default=True,
    help="Device of every system (ONNX Runtime and PyTorch).",
)
@click.option("--layer", default="fc7", show_default=True, help="Layer every system computes.")
@click.option(
    "--batch-sizes", default="1,8,32", show_default=True, help="Batch sizes of the model-only view."
)
@click.option(
    "--images",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Image folder (<class>/<image> or train|test/<class>/<image>).",
)
@click.option(
    "--synthetic",
    type=click.IntRange(min=1),
    default=None,
    help="Generate N pictures instead of --images (default 64).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Use only N images of --images, drawn with --seed.",
)
@click.option(
    "--precision",
    "precisions",
    default=None,
    help="fstore precisions to time, e.g. fp32,int8 (default on CPU) or fp32,fp16 "
    "(default on CUDA).",
)
@weights_option
@seed_option
@click.option(
    "--input-size",
    default=224,
    show_default=True,
    type=click.IntRange(min=32),
    help="Input side in pixels; small values make quick checks.",
)
@click.option(
    "--repeats",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed rounds of the model-only view.",
)
@click.option(
    "--warmup",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Untimed runs per system and batch size first.",
)
@click.option(
    "--view",
    "views",
    default="model,e2e",
    show_default=True,
    help="Views to run: model, e2e or both.",
)
@click.option(
    "--e2e-repeats",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed rounds of the end-to-end view.",
)
@click.option(
    "--e2e-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Batch size of the end-to-end view (default: the largest of --batch-sizes).",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Decoding threads of build, DataLoader workers of the eager loop.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="ONNX Runtime and torch threads (default: all usable cores).",
)
@precision_options("--images")
@click.option(
    "--fidelity-per-class",
    type=click.IntRange(min=1),
    default=None,
    help="At most N images per class (and split) of --fidelity-images.",
)
@click.option(
    "--gemm-size",
    default=2048,
    show_default=True,
    type=click.IntRange(min=16),
    help="Matrix side of the GEMM peak measurement.",
)
@click.option(
    "--peak-seconds",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds spent on each GEMM peak.",
)
@click.option(
    "--memory",
    type=click.Choice(["subprocess", "off"]),
    default="subprocess",
    show_default=True,
    help="Measure each system's peak memory in a fresh process.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("bench"),
    show_default=True,
    help="Folder for bench.md, bench.json and bench.png.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench(
    provider: str,
    layer: str,
    batch_sizes: str,
    images: Path | None,
    synthetic: int | None,
    limit: int | None,
    precisions: str | None,
    weights: str,
    seed: int,
    input_size: int,
    repeats: int,
    warmup: int,
    views: str,
    e2e_repeats: int,
    e2e_batch_size: int | None,
    workers: int,
    threads: int | None,
    calibration: Path | None,
    calibration_count: int,
    fidelity_images: Path | None,
    fidelity_per_class: int | None,
    gemm_size: int,
    peak_seconds: float,
    memory: str,
    out: Path,
    quiet: bool,
    as_json: bool,
) -> None:
    """Time eager PyTorch VGG16 against fstore's ONNX Runtime sessions, model only and end to end.

    Writes a Markdown report, a JSON file and a PNG chart into --out.
    """
    from fstore.benchmarks.harness import BenchConfig, run_bench
    from fstore.benchmarks.report import write_report

    if images is not None and synthetic is not None:
        raise click.BadParameter("give --images or --synthetic, not both")
    config = BenchConfig(
        layer=layer,
        provider=provider,
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        precisions=_names(precisions) if precisions else None,
        images=images,
        synthetic=synthetic or 64,
        limit=limit,
        input_size=input_size,
        weights=weights_source(weights, seed),
        repeats=repeats,
        warmup=warmup,
        views=_names(views),
        e2e_repeats=e2e_repeats,
        e2e_batch_size=e2e_batch_size,
        workers=workers,
        threads=threads,
        calibration=calibration,
        calibration_count=calibration_count,
        fidelity_images=fidelity_images,
        fidelity_per_class=fidelity_per_class,
        gemm_size=gemm_size,
        peak_seconds=peak_seconds,
        memory=memory,
        seed=seed,
    )
    log = (lambda _: None) if quiet else echo_err
    try:
        result = run_bench(config, log=log)
        paths = write_report(result, out)
    except FstoreError as exc:  # one line for the user, also when run outside the fstore group
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(json.loads(paths["json"].read_text()), indent=1))
        return
    for r in result.model_rows + result.e2e_rows:
        ratio = "" if r.ratio is None else f" ({r.ratio:.2f}x eager fp32)"
        click.echo(
            f"{r.view:<5} {r.system:<11} batch {r.batch_size:>3}: "
            f"{r.images_per_s.median:8.2f} images/s{ratio}"
        )
    for t in result.targets:
        click.echo(f"target: {t['target']}: {t['status']}")
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
