"""What one benchmark run measured, the targets it checks, and the notes that qualify it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from fstore.benchmarks.statistics import Row

#: Targets on a 2-core CPU machine: fstore against eager fp32, and int8's fidelity.
TARGET_FP32_E2E = 1.5
TARGET_INT8 = 4.0
TARGET_COSINE = 0.99
TARGET_SVM_POINTS = 1.0
#: The input side: fstore build's pipeline against the eager DataLoader's ceiling.
TARGET_PIPELINE = 1.5


@dataclass
class Stage:
    """Where a run's time went: one stage's wall seconds, and whether fstore's cache served it
    (``None``: nothing of it is cached)."""

    name: str
    seconds: float = 0.0
    cached: bool | None = None


@dataclass
class BenchResult:
    """Everything one benchmark run measured; :mod:`fstore.benchmarks.summary` writes it."""

    started: str
    seconds: float
    config: dict
    machine: dict
    provider: str
    layer: str
    input_size: int
    macs_per_image: int
    peaks: dict[str, dict]
    systems: list
    images: dict
    models: dict[str, str]
    model_rows: list[Row] = field(default_factory=list)
    e2e_rows: list[Row] = field(default_factory=list)
    pipeline_rows: list[Row] = field(default_factory=list)
    fidelity: dict = field(default_factory=dict)
    targets: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    #: the eager variant probe: seconds per image of each candidate, and the one chosen
    eager_probe: dict | None = None

    @property
    def flops_per_image(self) -> float:
        return 2.0 * self.macs_per_image

    @property
    def all_rows(self) -> list[Row]:
        return self.model_rows + self.e2e_rows + self.pipeline_rows

    def rows(self, view: str) -> list[Row]:
        return {"model": self.model_rows, "e2e": self.e2e_rows, "pipeline": self.pipeline_rows}[
            view
        ]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["flops_per_image"] = self.flops_per_image
        return data


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


def _target(
    text: str, value: float | None, meets: Callable[[float], bool], views: tuple[str, ...]
) -> dict:
    """One target: ``meets(value)`` says whether it is met; ``views`` are the views whose runs
    can measure it."""
    status = _status(None if value is None else meets(value))
    return {"target": text, "value": value, "status": status, "views": list(views)}


def _at_least(bound: float) -> Callable[[float], bool]:
    return lambda value: value >= bound


def _find(result: BenchResult, view: str, system: str, batch: int | None = None) -> Row | None:
    rows = [
        r
        for r in result.rows(view)
        if r.system == system and (batch is None or r.batch_size == batch)
    ]
    return rows[-1] if rows else None


def _ratio(row: Row | None) -> float | None:
    return row.ratio if row else None


def _int8_cosine(result: BenchResult) -> float | None:
    """The worse of int8's cosine in the model view and at export."""
    cosine = (result.fidelity.get("model_view", {}).get("ort-int8") or {}).get("mean_cosine")
    exported = (
        (result.fidelity.get("export", {}).get("int8") or {})
        .get("layers", {})
        .get(result.layer, {})
        .get("mean_cosine")
    )
    measured = [v for v in (cosine, exported) if v is not None]
    return min(measured) if measured else None


def evaluate_targets(result: BenchResult) -> list[dict]:
    """Each target ``met``, ``not met`` or ``not measured``, with the number it was judged on.

    A target also names the ``views`` that measure it, so a run can leave out the targets
    of views it did not run.
    """
    fp32 = _ratio(_find(result, "e2e", "ort-fp32"))
    largest = max(result.config["batch_sizes"]) if result.config.get("batch_sizes") else None
    int8_e2e = _ratio(_find(result, "e2e", "ort-int8"))
    int8_model = _ratio(_find(result, "model", "ort-int8", largest))
    cosine = _int8_cosine(result)
    svm = (result.fidelity.get("svm") or {}).get("int8")
    change = svm["change_points"] if svm else None
    pipeline = _ratio(_find(result, "pipeline", "build-noop"))
    normalised = _ratio(_find(result, "pipeline", "build-noop-norm"))
    return [
        _target(f"fstore fp32 end to end >= {TARGET_FP32_E2E}x eager fp32 end to end", fp32,
                _at_least(TARGET_FP32_E2E), ("e2e",)),
        _target(f"fstore int8 >= {TARGET_INT8}x eager fp32 (end to end)", int8_e2e,
                _at_least(TARGET_INT8), ("e2e",)),
        _target(f"fstore int8 >= {TARGET_INT8}x eager fp32 (model only, batch {largest})",
                int8_model, _at_least(TARGET_INT8), ("model",)),
        _target(f"int8 mean cosine vs fp32 >= {TARGET_COSINE}", cosine,
                _at_least(TARGET_COSINE), ("model", "e2e")),
        _target(f"int8 SVM test accuracy within {TARGET_SVM_POINTS} point of fp32", change,
                lambda v: abs(v) <= TARGET_SVM_POINTS, ("model", "e2e")),
        _target(f"fstore build pipeline >= {TARGET_PIPELINE}x the eager DataLoader's", pipeline,
                _at_least(TARGET_PIPELINE), ("pipeline",)),
        _target(f"same, normalising on these CPU cores >= {TARGET_PIPELINE}x the DataLoader's",
                normalised, _at_least(TARGET_PIPELINE), ("pipeline",)),
    ]  # fmt: skip


def notes_for(result: BenchResult, precisions: tuple[str, ...], memory: str) -> list[str]:
    """What qualifies the numbers: untested paths, synthetic images, how memory was measured."""
    notes = []
    if result.provider == "cpu":
        notes.append(
            "CUDA path untested in this run: no CUDA GPU (or no onnxruntime-gpu) here; "
            "run `fstore bench --provider cuda` on a GPU machine for the CUDA table."
        )
    if result.provider == "cpu" and "fp16" in precisions:
        notes.append(
            "fp16 on CPU: ONNX Runtime's CPU provider has few fp16 kernels; fp16 is meant for CUDA."
        )
    if result.provider == "cuda" and "int8" in precisions:
        notes.append(
            "int8 on CUDA: the CUDA provider runs QDQ models mostly dequantized; int8 "
            "speed on GPUs needs the TensorRT provider."
        )
    if result.images.get("source") == "synthetic":
        notes.append(
            "Images are generated pictures: speeds are representative, fidelity less so "
            "(pass --images and --calibration with real photographs)."
        )
    if result.pipeline_rows:
        notes.append(
            "Pipeline: both systems read, decode, batch and write the same files around a no-op "
            "model (the mean of each channel); the ratio is to the eager DataLoader's images/s."
        )
    if memory == "subprocess":
        notes.append(
            "Peak memory: each system in a fresh process, the growth of resident "
            "memory while it imports its library, loads its model and runs one batch "
            "of each size (model view) or runs end to end on the warm-up images, "
            "DataLoader workers' private memory included."
        )
    else:
        notes.append("Peak memory not measured (memory off).")
    return notes


def measurement_notes(result: BenchResult, beaten: list[str]) -> list[str]:
    """How the eager variant was chosen, and the peaks that were no ceiling."""
    notes = []
    probe = result.eager_probe
    if probe:
        rates = ", ".join(f"{v} {1 / s:.2f}" for v, s in probe["seconds_per_image"].items())
        notes.append(
            f"eager-best is {probe['chosen']}, the fastest eager variant in a probe on this "
            f"machine (batch {probe['batch_size']}, median of {probe['rounds']} rounds, "
            f"images/s): {rates}."
        )
    for kind in beaten:
        peak = result.peaks[kind]
        load = "" if peak.get("load") is None else f", measured at load {peak['load']:.1f}"
        notes.append(
            f"The measured {kind} GEMM peak ({peak['gflops']:.1f} GFLOP/s, {peak['how']}"
            f"{load}) is below what a system reached in {kind}, so it is no ceiling here: no "
            "share of it is shown (`--full` measures the peaks again and keeps the higher)."
        )
    return notes
