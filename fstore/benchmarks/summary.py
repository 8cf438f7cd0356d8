"""What ``fstore bench`` writes: ``bench.md`` (for people), ``bench.json`` (everything measured)
and ``bench.png`` (images/s per system, with the spread over rounds).

The chart is drawn with Matplotlib's object API on the Agg canvas (no display needed).
"""

from __future__ import annotations

from pathlib import Path

from fstore.benchmarks.result import BenchResult, Stage
from fstore.benchmarks.statistics import BASELINE, Row
from fstore.errors import OutputPathError
from fstore.fsutil import atomic_write_bytes, json_text

FILES = {"markdown": "bench.md", "json": "bench.json", "chart": "bench.png"}
VIEW_TITLES = {
    "model": "Model only (batches already in memory)",
    "e2e": "End to end (images on disk → features in a store)",
    "pipeline": "Input pipeline (read → decode → batch → write, no-op model)",
}
VIEWS = tuple(VIEW_TITLES)


def _fmt(value: float | None, spec: str = ".1f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def _spread(row: Row, attr: str, spec: str = ".1f") -> str:
    s = getattr(row, attr)
    return f"{s.median:{spec}} [{s.min:{spec}}–{s.max:{spec}}]"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _machine_lines(result: BenchResult) -> list[str]:
    m = result.machine
    gpu = m.get("gpu") or "none"
    lines = [
        f"- CPU: {m.get('cpu')} ({m.get('cores')} cores, {m.get('usable_cores')} usable); "
        f"features: {', '.join(m.get('cpu_flags') or []) or 'none detected'}",
        f"- Memory: {_fmt(m.get('memory_gib'))} GiB; GPU: {gpu}; ONNX Runtime providers: "
        f"{', '.join(m.get('onnxruntime_providers') or [])}",
        f"- Load average at start: {', '.join(f'{v:.2f}' for v in m.get('load_average') or [])}",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()),
    ]
    for kind, peak in result.peaks.items():
        unit = "GOP/s" if kind == "int8" else "GFLOP/s"
        when = f"measured {peak['measured']}" if peak.get("measured") else "measured"
        if peak.get("load") is not None:
            when += f" at load {peak['load']:.1f}"
        if peak.get("from_cache"):
            when += ", from fstore's cache"
        lines.append(
            f"- Measured {kind} GEMM peak: {peak['gflops']:.1f} {unit} "
            f"({peak['how']}, n={peak['n']}; {when})"
        )
    lines.append(
        f"- VGG16 up to {result.layer} at {result.input_size}x{result.input_size}: "
        f"{result.macs_per_image / 1e9:.3f} GMAC = {result.flops_per_image / 1e9:.3f} "
        "GFLOP per image"
    )
    return lines


def _cosine(result: BenchResult, system: str) -> str:
    row = (result.fidelity.get("model_view") or {}).get(system)
    if system == BASELINE:
        return "reference"
    if not row:
        return "–"
    return f"{row['mean_cosine']:.4f} / {row['min_cosine']:.4f}"


def _table(result: BenchResult, view: str) -> list[str]:
    rows = result.rows(view)
    if not rows:
        return []
    if view == "pipeline":
        return _pipeline_table(result)
    if view == "model":
        head = (
            "| system | batch | images/s median [min–max] | × eager fp32 | "
            "ms per batch median [min–max] | peak MiB | of GEMM peak | "
            "cosine vs eager fp32 (mean / min) |"
        )
        lines = [head, "|" + "---|" * 8]
        for r in sorted(rows, key=lambda r: (r.batch_size, _order(result, r.system))):
            lines.append(
                f"| {r.system} | {r.batch_size} | {_spread(r, 'images_per_s')} | "
                f"{_fmt(r.ratio, '.2f')}× | {_spread(r, 'latency_ms')} | {_fmt(r.peak_mib, '.0f')} "
                f"| {_percent(r.fraction_of_peak)} {r.peak_kind or ''} | "
                f"{_cosine(result, r.system)} |"
            )
        return lines
    head = (
        "| system | batch | images | images/s median [min–max] | × eager fp32 | "
        "ms per batch median [min–max] | seconds (load / wait-decode / infer / write) | "
        "peak MiB | of GEMM peak |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in sorted(rows, key=lambda r: _order(result, r.system)):
        d = r.details
        if "load_seconds" in d:
            stages = (
                f"{d['load_seconds']:.1f} / {d['wait_seconds']:.1f} / "
                f"{d['inference_seconds']:.1f} / {d['write_seconds']:.1f}"
            )
        else:
            stages = (
                f"– / {d.get('decode_seconds', 0):.1f} (summed over threads) / "
                f"{d.get('inference_seconds', 0):.1f} / {d.get('write_seconds', 0):.1f}"
            )
        lines.append(
            f"| {r.system} | {r.batch_size} | {r.images} | {_spread(r, 'images_per_s')} | "
            f"{_fmt(r.ratio, '.2f')}× | {_spread(r, 'latency_ms')} | {stages} | "
            f"{_fmt(r.peak_mib, '.0f')} | {_percent(r.fraction_of_peak)} {r.peak_kind or ''} |"
        )
    return lines


def _pipeline_table(result: BenchResult) -> list[str]:
    head = (
        "| system | batch | images | images/s median [min–max] | × DataLoader | "
        "seconds (wait-decode / write) | peak MiB |"
    )
    lines = [head, "|" + "---|" * 7]
    for r in sorted(result.pipeline_rows, key=lambda r: _order(result, r.system)):
        d = r.details
        wait = d.get("wait_seconds", d.get("decode_seconds", 0.0))
        lines.append(
            f"| {r.system} | {r.batch_size} | {r.images} | {_spread(r, 'images_per_s')} | "
            f"{_fmt(r.ratio, '.2f')}× | {wait:.1f} / {d.get('write_seconds', 0.0):.1f} | "
            f"{_fmt(r.peak_mib, '.0f')} |"
        )
    return lines


def _order(result: BenchResult, system: str) -> int:
    ids = [s.id for s in result.systems]
    return ids.index(system) if system in ids else len(ids)


def _fidelity_lines(result: BenchResult) -> list[str]:
    lines = []
    for precision, record in (result.fidelity.get("export") or {}).items():
        if not record:
            continue
        for layer, row in record.get("layers", {}).items():
            lines.append(
                f"- {precision} at export, {layer}: cosine vs fp32 mean "
                f"{row['mean_cosine']:.4f}, min {row['min_cosine']:.4f}, max relative "
                f"error {row['max_relative_error']:.3g} ({row['images']} "
                f"{record.get('source', '')} images)"
            )
    agreement = result.fidelity.get("e2e_agreement") or {}
    if agreement.get("images"):
        lines.append(
            f"- End to end, fstore fp32 store against eager fp32 HDF5 on "
            f"{agreement['images']} images: cosine mean {agreement['mean_cosine']:.6f}, "
            f"min {agreement['min_cosine']:.6f}, max relative error "
            f"{agreement['max_relative_error']:.2e}"
        )
    for precision, svm in (result.fidelity.get("svm") or {}).items():
        lines.append(
            f"- SVM test accuracy on {svm['layer']} ({svm['n_train']} train, "
            f"{svm['n_test']} test, split {svm['split']}): fp32 "
            f"{100 * svm['fp32_accuracy']:.1f}%, {precision} "
            f"{100 * svm['accuracy']:.1f}% "
            f"({svm['change_points']:+.1f} points)"
        )
    if "svm" not in result.fidelity:
        lines.append("- SVM accuracy change: not measured (pass --fidelity-images DIR).")
    return lines


def stage_line(stage: Stage) -> str:
    """``export fp32: 0.1 s (from the cache)``."""
    cached = {True: " (from the cache)", False: " (computed, now cached)", None: ""}[stage.cached]
    return f"{stage.name}: {stage.seconds:.1f} s{cached}"


def time_lines(result: BenchResult) -> list[str]:
    """Where the run's time went, stage by stage, with the total."""
    accounted = sum(s.seconds for s in result.stages)
    return [
        *[f"- {stage_line(s)}" for s in result.stages],
        f"- other (machine facts, ratios): {max(0.0, result.seconds - accounted):.1f} s",
        f"- total: {result.seconds:.1f} s",
    ]


def _runs_vgg16(result: BenchResult) -> bool:
    return bool(result.model_rows or result.e2e_rows)


def _count(n: int | None, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _run_line(result: BenchResult) -> str:
    """When, how long, on what, and how each view that ran was timed."""
    c = result.config
    parts = [
        f"Run {result.started}, {result.seconds:.0f} s. Images: {result.images['description']}.",
        f"Threads: {c.get('threads')}; decoding workers: {c.get('workers')}.",
    ]
    if _runs_vgg16(result):
        parts.insert(1, f"Weights: {c.get('weights')}.")
    if result.model_rows:
        rounds, warm = _count(c.get("repeats"), "round"), _count(c.get("warmup"), "warm-up run")
        parts.append(f"Model view: {rounds} after {warm}.")
    if result.e2e_rows or result.pipeline_rows:
        parts.append(
            f"End to end and pipeline: {_count(c.get('e2e_repeats'), 'round')}, batch "
            f"{c.get('e2e_batch_size')}, after one untimed run on a few images."
        )
    parts.append("Systems run interleaved in one process; medians with [min–max] over rounds.")
    return " ".join(parts)


def markdown(result: BenchResult) -> str:
    """The human-readable report."""
    what = f"VGG16 up to {result.layer}" if _runs_vgg16(result) else "input pipeline"
    machine = _machine_lines(result)
    if not _runs_vgg16(result):
        machine = machine[:-1]  # no VGG16 ran: its operations per image do not apply
    lines = [
        f"# fstore bench: {what}, {result.input_size}x{result.input_size}, "
        f"{result.provider.upper()}",
        "",
        _run_line(result),
        "",
        "## Machine",
        "",
        *machine,
        "",
        "## Systems",
        "",
        *[f"- `{s.id}`: {s.label}" for s in result.systems],
        "",
    ]
    for view in VIEWS:
        table = _table(result, view)
        if table:
            lines += [f"## {VIEW_TITLES[view]}", "", *table, ""]
    if _runs_vgg16(result):
        lines += ["## Fidelity", "", *_fidelity_lines(result), ""]
    if result.stages:
        lines += ["## Where the time went", "", *time_lines(result), ""]
    lines += ["## Targets", ""]
    for t in result.targets:
        value = t["value"]
        shown = "–" if value is None else f"{value:.4g}"
        lines.append(f"- {t['target']}: {shown} — **{t['status']}**")
    lines += ["", "## Notes", "", *[f"- {n}" for n in result.notes], ""]
    return "\n".join(lines)


def chart(result: BenchResult, path: Path) -> Path:
    """Images/s per system: model view per batch size, and end to end; bars span min–max."""
    import numpy as np
    from matplotlib.figure import Figure

    views = [v for v in VIEWS if result.rows(v)]
    fig = Figure(figsize=(6 * max(1, len(views)), 4.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(views)), squeeze=False)[0]
    colors = {s.id: f"C{i}" for i, s in enumerate(result.systems)}
    for ax, view in zip(axes, views):
        rows = result.rows(view)
        ids = [s.id for s in result.systems if any(r.system == s.id for r in rows)]
        sizes = sorted({r.batch_size for r in rows})
        width = 0.8 / max(1, len(ids))
        for j, sid in enumerate(ids):
            xs, ys, lo, hi = [], [], [], []
            for i, size in enumerate(sizes):
                match = [r for r in rows if r.system == sid and r.batch_size == size]
                if match:
                    s = match[0].images_per_s
                    xs.append(i + (j - (len(ids) - 1) / 2) * width)
                    ys.append(s.median)
                    lo.append(s.median - s.min)
                    hi.append(s.max - s.median)
            if xs:
                ax.bar(
                    xs, ys, width, yerr=np.array([lo, hi]), capsize=3, color=colors[sid], label=sid
                )
        ax.set_xticks(range(len(sizes)), [f"batch {s}" for s in sizes])
        ax.set_ylabel("images/s (median, min–max)")
        ax.set_title(VIEW_TITLES[view], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"VGG16 → {result.layer}, {result.input_size}px, {result.provider.upper()}, "
        f"{result.machine.get('cpu')}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    return path


def write_report(result: BenchResult, out: Path) -> dict[str, Path]:
    """Write ``bench.md``, ``bench.json`` and ``bench.png`` into ``out``; returns their paths."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {kind: out / name for kind, name in FILES.items()}
        atomic_write_bytes(paths["json"], json_text(result.to_dict()).encode())
        atomic_write_bytes(paths["markdown"], markdown(result).encode())
        chart(result, paths["chart"])
    except OSError as exc:
        raise OutputPathError(f"cannot write the benchmark report into {out}: {exc}") from None
    return paths
