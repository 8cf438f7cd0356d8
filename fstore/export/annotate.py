"""A foreign ONNX image model made fstore's own: the uint8 input prefix and its preprocessing.

A model exported elsewhere (``../shared/models/efficientnet_lite1.onnx``) takes float NCHW
input and says nothing of how its pictures were prepared, so every command had to be told
(``--size 240 --resize 274 --mean … --std …``). :func:`annotate` writes a copy that takes uint8
NHWC pixels (:mod:`fstore.runtime.prefix`) and carries the preprocessing and provenance in its
metadata like an fstore export (architecture ``onnx``, weights named by the original file's
sha256). The copy is checked against the original run with the same preprocessing on the same
pixels: cosine >= :data:`MIN_COSINE` per output and image, or it is deleted and refused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fstore import __version__
from fstore.errors import ModelError
from fstore.export.calibration import choose_images, synthetic_pixels
from fstore.export.precision import fidelity
from fstore.export.result import ExportResult, check_writable, save_model
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import file_sha256
from fstore.runtime.metadata import ModelInfo
from fstore.runtime.prefix import add_prefix, has_prefix, image_input
from fstore.runtime.session import OrtBackend

logger = logging.getLogger(__name__)

#: The cosine every output of every image must keep against the original with its flags.
MIN_COSINE = 0.9999
#: Images (or generated pictures) the check runs.
CHECK_IMAGES = 16
ARCH = "onnx"


def _fixed_side(model) -> int | None:
    dims = image_input(model).type.tensor_type.shape.dim
    sides = [d.dim_value for d in list(dims)[2:] if d.HasField("dim_value")]
    return sides[0] if sides else None


def _precision(model) -> str:
    import onnx

    float16 = image_input(model).type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    return "fp16" if float16 else "fp32"


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _check_images(images: Path | None, prep: Preprocessing):
    if images is None:
        return synthetic_pixels(CHECK_IMAGES, prep, seed=3)
    return choose_images(images, CHECK_IMAGES, seed=3)  # drawn from every class


def _verify(source: Path, output: Path, prep: Preprocessing, images) -> dict[str, float]:
    """Per output, the lowest cosine between the copy and the original with ``prep``."""
    rows = fidelity(source, output, images, prep, foreign_reference=True)
    low = {name: row["min_cosine"] for name, row in rows.items()}
    bad = {name: cos for name, cos in low.items() if not cos >= MIN_COSINE}
    if bad:
        output.unlink(missing_ok=True)
        raise ModelError(
            f"the annotated copy of {source.name} differs from it: "
            + ", ".join(f"{n} cosine {c:.6f}" for n, c in bad.items())
            + f" (at least {MIN_COSINE} required)"
        )
    return low


def annotate(
    source: Path, preprocessing: Preprocessing, output: Path, images: Path | None = None
) -> ExportResult:
    """Write ``source`` with fstore's uint8 input and ``preprocessing`` in its metadata to
    ``output``, checked against ``source`` on :data:`CHECK_IMAGES` of ``images`` (an image
    folder; generated pictures without one). ``errors`` of the result are ``1 - cosine``."""
    import onnx

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise ModelError(f"model file {source} does not exist")
    check_writable(output)
    start = time.perf_counter()
    model = onnx.load(str(source))
    if has_prefix(model):
        raise ModelError(f"{source} already takes uint8 pixels (annotated or exported by fstore)")
    side = _fixed_side(model)
    if side is not None and side != preprocessing.crop:
        raise ModelError(f"{source.name} takes {side}x{side} pixels, not {preprocessing.crop}")
    precision = _precision(model)
    add_prefix(model, preprocessing.mean, preprocessing.std)
    layers = tuple(o.name for o in model.graph.output)
    original = OrtBackend.open(source, "cpu", preprocessing=preprocessing)
    probe = original.run(synthetic_pixels(1, preprocessing))
    info = ModelInfo(
        layers=layers,
        shapes={name: tuple(probe[name].shape[1:]) for name in layers},
        preprocessing=preprocessing,
        weights_origin=f"onnx:{source.name}",
        weights_sha256=file_sha256(source),
        precision=precision,
        opset=_opset(model),
        classes=None,
        fstore_version=__version__,
        arch=ARCH,
    )
    for key, value in info.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    save_model(model, output)
    cosines = _verify(source, output, preprocessing, _check_images(images, preprocessing))
    for name, cos in cosines.items():
        logger.info("annotated %s: min cosine vs the original with its flags %.6f", name, cos)
    errors = {name: 1.0 - cos for name, cos in cosines.items()}
    return ExportResult(output, info, errors, time.perf_counter() - start, False)
