"""The report's sections as neutral blocks, rendered alike to HTML and Markdown.

A block is ``("h2", text)``, ``("p", text)``, ``("table", headers, rows)``, ``("img", path,
caption)`` or ``("thumbs", [(path, caption), ...])``; paths are the figures of a stage's cache
entry. Every number shown is read from the stage results, never computed here.
"""

from __future__ import annotations

from pathlib import Path


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _fig(section: dict, name: str) -> Path:
    return Path(section["folder"]) / section["figures"][name]


def network(s: dict) -> list:
    if s["kind"] == "vgg16":
        rows = [
            [r["name"], r["module"], "×".join(map(str, r["output_shape"])), f"{r['params']:,}"]
            for r in s["rows"]
        ]
        return [
            (
                "p",
                f"VGG16 at {s['input_size']}×{s['input_size']}: {s['total_params']:,} "
                f"parameters, {s['fc_params_share']:.1%} of them in fc6, fc7 and fc8; "
                f"{s['total_macs'] / 1e9:.2f} G multiply-adds per image.",
            ),
            ("table", ["layer", "module", "output", "parameters"], rows),
        ]
    outs = [
        [o["name"], "×".join(map(str, o["shape"])) or "?", f"{o['size']:,}" if o["size"] else "?"]
        for o in s["outputs"]
    ]
    ops = ", ".join(f"{k} {v}" for k, v in list(s["ops"].items())[:8])
    return [
        (
            "p",
            f"ONNX model {Path(s['file']).name} ({s['bytes'] / 2**20:.1f} MiB, opset "
            f"{s['opset']}): input {s['input']['name']} "
            f"{'×'.join(map(str, s['input']['shape']))}, {s['total_params']:,} parameters "
            f"in {s['initializers']} initializers, {s['nodes']} nodes ({ops} …).",
        ),
        ("table", ["output", "shape per image", "values"], outs),
    ]


def predictions(s: dict) -> list:
    if not s.get("available"):
        return [("p", f"Not available: {s.get('reason')}")]
    thumbs = []
    for i, row in enumerate(s["images"]):
        top = "; ".join(f"{t['name']} {t['probability']:.1%}" for t in row["top"])
        thumbs.append((_fig(s, f"sample{i}"), f"{row['key']}: {top}"))
    return [
        (
            "p",
            "Top-5 ImageNet classes of one test image per class (the network's view: "
            "resized and centre-cropped).",
        ),
        ("thumbs", thumbs),
    ]


def activations(s: dict) -> list:
    if not s.get("available"):
        return [("p", f"Not available: {s.get('reason')}")]
    return [
        (
            "p",
            f"{s['channels']} channels of {s['layer']} ({'×'.join(map(str, s['map_shape']))}"
            f") for {s['image']}: {s['how']}. Each tile is scaled to its own min and max.",
        ),
        ("img", _fig(s, "maps"), "first convolution"),
    ]


def svm(s: dict, classes: list[str]) -> list:
    run = s["svm"]
    fit = run["fits"][0]
    best = fit["details"]["best_C"]
    grid = [
        [
            f"{r['C']:g}" + (" (best)" if r["C"] == best else ""),
            f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}",
        ]
        for r in fit["details"]["cv"]
    ]
    per_class = [[c, pct(a)] for c, a in zip(classes, run["per_class_mean"])]
    return [
        (
            "p",
            f"Linear SVM on {run['layer']} ({run['n_features']} features, scale "
            f"{run['options']['scale']}): C chosen by {run['options']['cv']}-fold "
            f"stratified CV on the {fit['n_train']} training images; test accuracy "
            f"**{pct(run['accuracy_mean'])}** on {fit['n_test']} test images "
            f"(fit {fit['fit_seconds']:.1f} s).",
        ),
        ("table", ["C", "CV accuracy % (mean ± std)"], grid),
        ("table", ["class", "test accuracy"], per_class),
        ("img", _fig(s, "confusion"), "SVM confusion matrix"),
    ]


def heads(s: dict) -> list:
    rows, blocks = [], []
    for name in ("linear", "mlp"):
        run = s[name]
        d = run["fits"][0]["details"]
        label = "linear" if not run["hidden"] else f"MLP {'-'.join(map(str, run['hidden']))}"
        rows.append(
            [
                label,
                pct(run["accuracy_mean"]),
                str(d["epochs_run"]),
                str(d["best_epoch"]),
                "yes" if d["stopped_early"] else "no",
                f"{run['fit_seconds_mean']:.1f}",
            ]
        )
        blocks.append(("img", _fig(s, name), f"{label} head learning curve"))
    return [
        (
            "table",
            [
                "head",
                "test accuracy",
                "epochs run",
                "early-stopping point (best epoch)",
                "stopped early",
                "fit s",
            ],
            rows,
        ),
        *blocks,
    ]


def pca(s: dict, svm_section: dict) -> list:
    thresholds = [
        [f"{float(k):.0%}", str(v) if v is not None else f"> {len(s['cumulative'])}"]
        for k, v in s["thresholds"].items()
    ]
    run, full = svm_section["pca_svm"], svm_section["svm"]
    comps = run["fits"][0]["details"].get("pca_components")
    return [
        (
            "p",
            f"PCA of {s['layer']} ({s['n_samples']} {s['rows']} rows, {s['n_features']} "
            f"features, scale {s['scale']}).",
        ),
        ("table", ["variance kept", "components"], thresholds),
        ("img", _fig(s, "variance"), "explained variance"),
        (
            "p",
            f"SVM on PCA features ({run['options']['pca']} of the variance, {comps} "
            f"components): test accuracy **{pct(run['accuracy_mean'])}**, fit "
            f"{run['fit_seconds_mean']:.1f} s; on all {full['n_features']} features "
            f"{pct(full['accuracy_mean'])}, fit {full['fit_seconds_mean']:.1f} s.",
        ),
    ]


def layers(s: dict) -> list:
    rows = [
        [
            r["layer"],
            str(r["dim"]),
            pct(r["accuracy"]),
            f"{r['fit_seconds']:.1f}",
            ",".join(f"{c:g}" for c in r["best_C"]),
        ]
        for r in s["rows"]
    ]
    return [
        (
            "table",
            ["layer", "dimension", "SVM test accuracy", "fit s (CV + refit)", "best C"],
            rows,
        ),
        ("img", _fig(s, "layers"), "layer study"),
    ]


def zeroshot(s: dict) -> list:
    if not s.get("available"):
        return [("p", f"Not available: {s.get('reason')}")]
    rows = [[c, pct(a)] for c, a in zip(s["covered"], s["per_class"])]
    uncovered = ", ".join(s["uncovered"]) or "none"
    return [
        (
            "p",
            f"No training: ImageNet logits restricted to the {s['mapping']} mapping. "
            f"Accuracy over the {len(s['covered'])} covered classes: "
            f"**{pct(s['accuracy'])}** ({s['n_test']} {s['rows']} images). Not covered "
            f"({s['n_skipped']} images left out): {uncovered}.",
        ),
        ("table", ["class", "zero-shot accuracy"], rows),
        ("img", _fig(s, "confusion"), "zero-shot confusion matrix"),
    ]


def splits(s: dict) -> list:
    if not s.get("available"):
        return [("p", f"Not available: {s.get('reason')}")]
    p = s["protocol"]
    rows = [[f["split"], pct(f["accuracy"]), f"{f['details']['best_C']:g}"] for f in s["fits"]]
    return [
        (
            "p",
            f"SVM over {p['splits']} random splits of all images, {p['per_class']} "
            f"training images per class (seed {p['seed']}), the rest test: "
            f"**{pct(s['accuracy_mean'])} ± {pct(s['accuracy_std'])}** (mean ± sample "
            "std).",
        ),
        ("table", ["split", "test accuracy", "best C"], rows),
    ]


def precision(s: dict) -> list:
    rows = [
        [
            name,
            pct(r["fp32_accuracy"]),
            pct(r["accuracy"]),
            f"{r['change_points']:+.2f}",
            f"{r['mean_cosine']:.5f}",
            f"{r['min_cosine']:.5f}",
            str(r["images"]),
        ]
        for name, r in s["variants"].items()
    ]
    return [
        (
            "p",
            f"The model in other precisions over every image, {s['layer']} features: SVM "
            "test accuracy (same options) and cosine to fp32 per image.",
        ),
        (
            "table",
            [
                "precision",
                "fp32 accuracy",
                "accuracy",
                "change (points)",
                "mean cosine",
                "min cosine",
                "images",
            ],
            rows,
        ),
    ]


def improvements(s: dict) -> list:
    p = s["protocol"]
    k = f"{p['splits']} random splits (mean ± std)" if p else "random splits"
    rows = [
        [
            r["name"],
            r["reason"],
            pct(r["accuracy"]),
            "n/a"
            if r["splits_mean"] is None
            else f"{pct(r['splits_mean'])} ± {pct(r['splits_std'])}",
            f"{r['change_points']:+.2f}",
            f"{r['build']['images_per_second']:.1f} ({r['build']['times_plain']:.2f}×)",
            f"{r['fit_seconds']:.1f}",
        ]
        for r in s["rows"]
    ]
    best = next(r for r in s["rows"] if r["name"] == s["best"])
    cost = s["costs"]["plain"]
    return [
        (
            "p",
            "Each row trains the same SVM (C grid and folds as above) on other features: layers "
            "side by side (each l2-normalised first), means over augmented views stored by the "
            "build (`layer@views`), power scaling. The change is against the first row on the "
            f"store's split. Best: **{best['name']}, {pct(best['accuracy'])}** "
            f"({best['change_points']:+.2f} points). Build cost: images/s of a build of the "
            f"layers a row needs over the same {cost['images']} images, and its time against "
            "the plain build's; training: CV grid and refit on the store's split.",
        ),
        (
            "table",
            [
                "improvement",
                "reasoning",
                "test accuracy",
                k,
                "change (points)",
                "build images/s (time × plain)",
                "training s",
            ],
            rows,  # fmt: skip
        ),
        ("img", _fig(s, "chart"), "improvements"),
    ]


def quality(s: dict) -> list:
    d, leak, errors = s["duplicates"], s["leak"], s["label_errors"]
    labels = "; ".join(f"{n} {name}" for name, n in sorted(d["labels"].items()))
    exact = "; ".join(f"{n} {name}" for name, n in sorted(d["exact_labels"].items()))
    blocks = [
        (
            "p",
            f"Duplicates on {s['layer']}: **{d['exact_pairs']} byte-identical pairs** "
            f"(same sha256) in {d['exact_clusters']} clusters ({exact or 'none'}); with the "
            f"verified near copies **{d['clusters']} clusters**, {d['cross_split']} of them "
            f"across train and test ({labels or 'none'}). Candidates: each image's nearest "
            f"neighbours ({d['candidates']} pairs); {d['verified']} near pairs verified on "
            "the images (ORB keypoints, a RANSAC similarity, pixel agreement).",
        ),
        ("thumbs", [
            (_fig(s, f"cluster{i}"), f"{', '.join(c['labels'])}, "
             f"{'exact copies' if c['exact'] else 'near copies'}: " + "; ".join(
                f"{k} ({split or '-'}, {cls or '-'})"
                for k, split, cls in zip(c["keys"], c["splits"], c["classes"])))
            for i, c in enumerate(s["shown_clusters"])
        ]),
    ]  # fmt: skip
    if leak.get("available"):
        note = (
            "The other sections leave them out (--exclude-leaks)."
            if leak["excluded_from_sections"]
            else "The other sections count them (--exclude-leaks leaves them out)."
        )
        blocks.append(
            (
                "p",
                f"Leakage: {leak['leaked']} of the {leak['test_images']} test images have a "
                f"copy in the training split. The SVM's test accuracy: "
                f"**{pct(leak['accuracy_all'])} with them, {pct(leak['accuracy_without'])} "
                f"without them** (on the leaked images alone {pct(leak['accuracy_on_leaked'])})"
                f"; same model, only the test set differs. {note}",
            )
        )
    else:
        blocks.append(("p", f"Leakage: not available: {leak.get('reason')}"))
    if errors.get("available"):
        blocks.append(
            (
                "p",
                f"Suspected label errors: **{errors['count']}** of the {errors['audited']} "
                "training images (out-of-fold logistic regression, then cleanlab's confident "
                f"learning), the first {len(errors['top'])} below, each beside the training "
                "image most typical of its suggested class.",
            )
        )
        blocks.append(("table", ["rank", "image", "given", "suggested", "score", "example"], [
            [str(i["rank"]), i["key"], i["given"], i["suggested"], f"{i['score']:.4f}",
             i["example"]] for i in errors["top"]
        ]))  # fmt: skip
        blocks.append(("thumbs", [
            (_fig(s, f"issue{n}"), f"{i['rank']}. {i['key']}: given {i['given']}; suggested "
             f"{i['suggested']} (right: {i['example']})")
            for n, i in enumerate(errors["top"])
        ]))  # fmt: skip
    else:
        blocks.append(("p", f"Suspected label errors: not available: {errors.get('reason')}"))
    blocks.append(
        (
            "p",
            f"t-SNE map of {s['layer']} ({s['map_seconds']:.1f} s), coloured by class; "
            "circles: duplicates, crosses: suspected label errors.",
        )
    )
    blocks.append(("img", _fig(s, "map"), "t-SNE map"))
    return blocks
