"""What an export produces, and the small file steps every export shares."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.errors import OutputPathError
from fstore.fsutil import commit_file, tmp_path_for
from fstore.runtime.metadata import ModelInfo


@dataclass(frozen=True)
class ExportResult:
    """What :func:`fstore.export.onnx_export.export` produced.

    Attributes:
        path: the ONNX file (in the cache, or the ``output`` asked for).
        info: the metadata written into it.
        errors: per output, max |ORT - reference| / max |reference| (empty if cached): against
            eager PyTorch for fp32, against the fp32 model for int8 and fp16.
        seconds: wall time of export and verification (0 when served from the cache).
        from_cache: whether an earlier export was reused.
    """

    path: Path
    info: ModelInfo
    errors: dict[str, float]
    seconds: float
    from_cache: bool

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (0 when both are all zeros)."""
    scale = float(np.abs(reference).max())
    diff = float(np.abs(actual.astype(np.float64) - reference).max())
    return diff / scale if scale > 0 else diff


def check_writable(output: Path) -> None:
    """A one-line error now rather than after minutes of export."""
    output = Path(output)
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise OutputPathError(f"cannot write model to {output}: it is a folder")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OutputPathError(f"cannot write model to {output}: folder {parent} is not writable")


def deliver(result: ExportResult, output: Path | None) -> ExportResult:
    """The result, its model copied (atomically) to ``output`` when one was asked for."""
    if output is None:
        return result
    output = Path(output)
    tmp = tmp_path_for(output)
    shutil.copyfile(result.path, tmp)
    commit_file(tmp, output)
    return ExportResult(output, result.info, result.errors, result.seconds, result.from_cache)


def save_model(model, path: Path) -> Path:  # model: onnx.ModelProto
    """Write an ONNX model atomically (temporary file, then rename)."""
    import onnx

    path = Path(path)
    tmp = tmp_path_for(path)
    onnx.save(model, str(tmp))
    commit_file(tmp, path)
    return path


def set_props(model, updates: dict[str, str]) -> None:  # model: onnx.ModelProto
    """Merge ``updates`` into the model's ``metadata_props`` (sorted by key)."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(updates)
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]
