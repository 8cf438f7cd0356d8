"""``report.html`` (self-contained: figures as base64 PNG), ``report.md`` (figures beside it in
``figures/``) and ``report.json`` (every stage's data), from the same section blocks."""

from __future__ import annotations

import base64
import html
import re
import shutil
from pathlib import Path

from fstore.report import sections

CSS = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1.5em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;margin-top:2em;
padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td:not(:first-child){font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.6em 0}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:14px}
.thumbs figure{margin:0;border:1px solid #ddd;padding:8px;background:#fafafa}
.thumbs img{margin:0 auto 6px}
.thumbs figcaption{font-size:12.5px}
nav a{margin-right:.8em}.muted{color:#777;font-size:13px}
"""


def _summary_blocks(data: dict) -> list:
    s = data["summary"]
    rows = [
        ["SVM (all features)", sections.pct(s["svm_accuracy"])],
        ["linear head", sections.pct(s["linear_head_accuracy"])],
        ["MLP head", sections.pct(s["mlp_head_accuracy"])],
        [
            "PCA components for 90 / 95 / 99 %",
            " / ".join(str(v) for v in s["pca_components"].values()),
        ],
        ["SVM on PCA features", sections.pct(s["pca_svm_accuracy"])],
    ]
    if "svm_accuracy_without_leaks" in s:
        rows.append(
            [f"SVM without the {s['leaked_test_images']} leaked test images",
             sections.pct(s["svm_accuracy_without_leaks"])]
        )  # fmt: skip
    if "zeroshot_accuracy" in s:
        rows.append(["zero-shot (covered classes)", sections.pct(s["zeroshot_accuracy"])])
    if "splits" in s:
        k = s["splits"]
        rows.append(
            [f"{k['k']} random splits", f"{sections.pct(k['mean'])} ± {sections.pct(k['std'])}"]
        )
    best = s["best_improvement"]
    rows.append(
        [f"best improvement: {best['name']}", f"{sections.pct(best['accuracy'])} "
         f"({best['change_points']:+.2f} points)"]
    )  # fmt: skip
    for name in ("int8", "fp16"):
        if name in s:
            rows.append(
                [
                    f"{name}: accuracy change, mean cosine to fp32",
                    f"{s[name]['change_points']:+.2f} points, {s[name]['mean_cosine']:.5f}",
                ]
            )
    model = Path(data["provenance"]["store"].get("model_path", "")).name
    return [
        (
            "p",
            f"Model {model}, store {data['store']}, features of layer "
            f"{data['main_layer']}, {len(data['classes'])} classes.",
        ),
        ("table", ["figure", "value"], rows),
    ]


def _provenance_blocks(p: dict) -> list:
    store = p["store"]
    rows = [
        [k, str(store.get(k, ""))]
        for k in (
            "model_path",
            "model_sha256",
            "weights_origin",
            "weights_sha256",
            "precision",
            "preprocessing",
            "provider",
            "fstore_version",
            "onnxruntime_version",
        )
    ]
    rows += [
        ["store fingerprint", p["fingerprint"]],
        ["images", p["image_root"]],
        ["split", p["split"]],
    ]
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items() if v)
    m = p["machine"]
    times = [["build (store)", f"{p['build_seconds']:.1f} s"]]
    times += [
        [name, "cached" if t["cached"] else f"{t['seconds']:.1f} s"]
        for name, t in p["stage_times"].items()
    ]
    load = ", ".join(f"{x:.2f}" for x in m["load_average"]) if m["load_average"] else "n/a"
    return [
        ("table", ["", ""], rows),
        ("p", f"Versions: {versions}."),
        (
            "p",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; load average at "
            f"the end {load}. Written {p['written']}, total {p['total_seconds']:.1f} s.",
        ),
        ("table", ["stage", "time"], times),
    ]


def section_list(data: dict) -> list[tuple[str, str, list]]:
    """(anchor, title, blocks) of every section, in page order."""
    s = data["sections"]
    return [
        ("summary", "Summary", _summary_blocks(data)),
        ("network", "Network", sections.network(s["network"])),
        ("predictions", "Sample predictions", sections.predictions(s["predictions"])),
        ("activations", "Activation maps", sections.activations(s["activations"])),
        (
            "classifiers",
            "Classifiers",
            sections.svm(s["svm"], data["classes"]) + sections.heads(s["heads"]),
        ),
        ("pca", "PCA", sections.pca(s["pca"], s["svm"])),
        ("layers", "Layer study", sections.layers(s["layers"])),
        ("zeroshot", "Zero-shot", sections.zeroshot(s["zeroshot"])),
        ("splits", "K random splits", sections.splits(s["splits"])),
        ("improvements", "Improvements", sections.improvements(s["improvements"])),
        ("precision", "Precision", sections.precision(s["precision"])),
        ("quality", "Data quality", sections.quality(s["quality"])),
        ("provenance", "Provenance", _provenance_blocks(data["provenance"])),
    ]


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def _caption(text: str) -> str:
    """``key: a 5%; b 3%`` → the key in bold, then one class a line."""
    key, _, rest = text.partition(": ")
    lines = "<br>".join(html.escape(part) for part in rest.split("; "))
    return f"<b>{html.escape(key)}</b><br>{lines}"


def _html_block(block: tuple) -> str:
    kind = block[0]
    if kind == "p":
        return f"<p>{_inline(block[1])}</p>"
    if kind == "table":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in block[2]
        )
        return f"<table>{f'<tr>{head}</tr>' if any(block[1]) else ''}{body}</table>"
    if kind == "img":
        return f'<img src="{_png(block[1])}" alt="{html.escape(block[2])}">'
    figures = "".join(
        f'<figure><img src="{_png(p)}" alt=""><figcaption>{_caption(c)}</figcaption></figure>'
        for p, c in block[1]
    )
    return f'<div class="thumbs">{figures}</div>'


def to_html(data: dict) -> str:
    parts = [
        f"<h1>{html.escape(data['title'])}</h1>",
        "<nav>"
        + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in section_list(data))
        + "</nav>",
    ]
    for anchor, title, blocks in section_list(data):
        parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        parts.extend(_html_block(b) for b in blocks)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(data['title'])}</title><style>{CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def _md_table(headers: list[str], rows: list[list]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *map(line, rows)])


def to_markdown(data: dict, figures: Path) -> str:
    """Markdown of every section; figures copied into ``figures`` and linked relatively."""
    figures.mkdir(parents=True, exist_ok=True)

    def link(path: Path, caption: str) -> str:
        name = f"{Path(path).parent.name.split('-')[0]}-{Path(path).name}"
        shutil.copyfile(path, figures / name)
        return f"![{caption}]({figures.name}/{name})"

    out = [f"# {data['title']}"]
    for _, title, blocks in section_list(data):
        out.append(f"## {title}")
        for b in blocks:
            if b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append(_md_table(b[1], b[2]))
            elif b[0] == "img":
                out.append(link(b[1], b[2]))
            else:
                out.append("\n".join(f"{link(p, 'sample')} {c}  " for p, c in b[1]))
    return "\n\n".join(out) + "\n"


def write_outputs(data: dict, out: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``report.md`` (with ``figures/``) into ``out``."""
    from fstore.classifiers.outputs import write_json
    from fstore.fsutil import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    files = {"json": write_json(out / "report.json", data)}
    atomic_write_bytes(out / "report.html", to_html(data).encode())
    atomic_write_bytes(out / "report.md", to_markdown(data, out / "figures").encode())
    files.update(html=out / "report.html", markdown=out / "report.md")
    return files
