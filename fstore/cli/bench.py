"""``fstore bench``: time eager PyTorch against fstore's ONNX Runtime sessions.

Parses options into one :class:`fstore.benchmarks.config.BenchConfig`, calls
:func:`fstore.benchmarks.harness.run_bench` and writes the report. Nothing heavy is imported
until the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from fstore.benchmarks.config import BENCH_PROVIDERS, FULL, BenchConfig
from fstore.cli.options import (
    CommaList,
    FstoreCommand,
    precision_options,
    seed_option,
    use_stderr_logging,
    weights_option,
)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _defaults(name: str) -> str:
    """The quick run's default of a ``BenchConfig`` field, and ``--full``'s, for ``--help``."""
    quick = _shown(BenchConfig.__dataclass_fields__[name].default)
    return f"[default: {quick}; --full: {_shown(FULL[name])}]"


def _summary(result) -> list[str]:  # result: BenchResult
    from fstore.benchmarks.summary import stage_line

    lines = []
    for r in result.all_rows:
        base = "DataLoader" if r.view == "pipeline" else "eager fp32"
        ratio = "" if r.ratio is None else f" ({r.ratio:.2f}x {base})"
        lines.append(
            f"{r.view:<8} {r.system:<11} batch {r.batch_size:>3}: "
            f"{r.images_per_s.median:8.2f} images/s{ratio}"
        )
    lines += [f"target: {t['target']}: {t['status']}" for t in result.targets]
    if result.eager_probe:
        lines.append(f"eager-best: {result.eager_probe['chosen']} (fastest in the probe)")
    lines.append(
        f"time: {result.seconds:.0f} s; " + ", ".join(stage_line(s) for s in result.stages)
    )
    return lines


@click.command(cls=FstoreCommand)
@click.option(
    "--provider",
    type=click.Choice(BENCH_PROVIDERS),
    default="auto",
    show_default=True,
    help="Device of every system (ONNX Runtime and PyTorch).",
)
@click.option("--layer", default="fc7", show_default=True, help="Layer every system computes.")
@click.option(
    "--full",
    is_flag=True,
    help="The long run: more images, batch sizes and rounds, peak memory, GEMM peaks measured "
    "again (tens of minutes on 2 CPU cores); options given still win.",
)
@click.option(
    "--batch-sizes",
    default=None,
    type=CommaList(click.IntRange(min=1)),
    help=f"Batch sizes of the model-only view.  {_defaults('batch_sizes')}",
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
    help=f"Generate N pictures instead of --images.  {_defaults('synthetic')}",
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
    type=CommaList(str),
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
    default=None,
    type=click.IntRange(min=1),
    help=f"Timed rounds of the model-only view.  {_defaults('repeats')}",
)
@click.option(
    "--warmup",
    default=None,
    type=click.IntRange(min=0),
    help=f"Untimed runs per system and batch size first.  {_defaults('warmup')}",
)
@click.option(
    "--views",
    "--view",
    "views",
    default="model,e2e,pipeline",
    show_default=True,
    type=CommaList(str),
    help="Views to run: model (model only), e2e (end to end), pipeline (the input side around "
    "a no-op model; alone, it needs no VGG16).",
)
@click.option(
    "--e2e-repeats",
    default=None,
    type=click.IntRange(min=1),
    help=f"Timed rounds of the end-to-end and pipeline views.  {_defaults('e2e_repeats')}",
)
@click.option(
    "--e2e-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Batch size of the end-to-end and pipeline views (default: the largest of --batch-sizes).",
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
    help="Seconds spent on each GEMM peak when measured; peaks are kept in fstore's cache "
    "folder and measured again with --full.",
)
@click.option(
    "--memory",
    type=click.Choice(["subprocess", "off"]),
    default=None,
    help=f"Measure each system's peak memory in a fresh process.  {_defaults('memory')}",
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
def bench(out: Path, quiet: bool, as_json: bool, full: bool, **options) -> None:
    """Time eager PyTorch VGG16 against fstore's ONNX Runtime sessions, model only and end to end,
    and both input pipelines around a no-op model.

    Writes a Markdown report, a JSON file and a PNG chart into --out.

    Examples:

    \b
      # a quick check: 8 generated pictures, batch 4
      fstore bench --synthetic 8 --batch-sizes 4 --weights random
      # the input side alone, around a no-op model (no VGG16 needed)
      fstore bench --views pipeline --images ../shared/data/scene15
      # model only and end to end, fp32 and int8, on 96 15-Scene images
      fstore bench --provider cpu --weights random \\
          --images ../shared/data/scene15 --limit 96 --batch-sizes 32 \\
          --precision fp32,int8 --views model,e2e
    """
    from fstore.benchmarks.harness import run_bench
    from fstore.benchmarks.summary import write_report

    if options["images"] is not None and options["synthetic"] is not None:
        raise click.BadParameter("give --images or --synthetic, not both")
    config = BenchConfig.from_options(full=full, **options)
    use_stderr_logging(quiet)
    result = run_bench(config)
    paths = write_report(result, out)
    if as_json:
        click.echo(json.dumps(json.loads(paths["json"].read_text()), indent=1))
        return
    for line in _summary(result):
        click.echo(line)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
