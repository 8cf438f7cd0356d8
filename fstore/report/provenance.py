"""The report's Provenance section: model, weights, preprocessing, versions, machine, times."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata

from fstore.report.context import Context

PACKAGES = (
    "fstore",
    "numpy",
    "scipy",
    "scikit-learn",
    "onnx",
    "onnxruntime",
    "h5py",
    "pillow",
    "matplotlib",
    "torch",
    "torchvision",
)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(ctx: Context, seconds: float, build_seconds: float) -> dict:
    """Where every number came from, and on what."""
    times = {
        name: {"seconds": r.get("seconds"), "cached": r.get("cached")}
        for name, r in ctx.results.items()
    }
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "store": ctx.provenance,
        "fingerprint": ctx.manifest.fingerprint,
        "image_root": str(ctx.image_root),
        "split": str(ctx.manifest.split),
        "versions": _versions(),
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "load_average": load,
        },
        "build_seconds": build_seconds,
        "stage_times": times,
        "total_seconds": seconds,
        "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
