"""The normalisation prefix: a model fstore runs takes ``uint8 (N, H, W, 3)`` RGB pixels.

Decoders hand over uint8 crops; the model itself does what NumPy did before, in the same
float32 math, so the result equals ``((x / 255 - mean) / std)`` (NCHW, float32) within float32
rounding:

    Transpose(NHWC → NCHW) → Cast(float32) → Mul(1 / (255 std)) → Add(-mean / std)
    [→ Cast(float16)]

A quarter of the bytes cross to the device, and the host does no float work. The layout change
comes first, on the uint8 pixels: it moves a quarter of the bytes, and the multiply-add then
broadcasts its per-channel constants over whole planes. With the transpose last, ONNX Runtime's
CPU kernels broadcast a 3-vector over the innermost axis, which measured 7.6× slower for the
whole prefix (1.33 vs 0.17 ms per 224×224 image, one thread). ONNX Runtime's transpose
optimizer still pushes the transpose through the element-wise nodes where a layout change
follows (CUDA with ``prefer_nhwc``). An fp16 model (its input float16) gets its cast after
the normalisation, which stays float32; an fp16 model that kept a float32 input (fstore's own
fp16 export) casts inside, after the prefix, as before.

The prefix nodes are named ``fstore_input/...`` (:func:`prefix_node_names`), so quantization and
fp16 conversion can leave them alone, and what it does is recorded in the model's metadata as
``fstore.input`` (:class:`InputSpec`), so a wrapped model is never wrapped twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from fstore.errors import ModelError

if TYPE_CHECKING:
    import onnx

PROP_INPUT = "fstore.input"
NODE_PREFIX = "fstore_input/"
#: The name of the uint8 input of a wrapped model.
IMAGE_INPUT = "image"
#: Bumped when the prefix changes, and part of the model cache key.
PREFIX_VERSION = 2


@dataclass(frozen=True)
class InputSpec:
    """What a wrapped model's input is and what its prefix computes.

    Attributes:
        mean, std: per-channel normalisation after scaling pixels to [0, 1], RGB order.
        layout, dtype, channels: of the model's input: ``NHWC``, ``uint8``, ``RGB``.
        version: :data:`PREFIX_VERSION` of the prefix that wrote it.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: str = "NHWC"
    dtype: str = "uint8"
    channels: str = "RGB"
    version: int = PREFIX_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_props(cls, props: dict[str, str]) -> InputSpec | None:
        """The spec recorded in a model's metadata; ``None`` for a model that takes floats."""
        text = props.get(PROP_INPUT)
        if not text:
            return None
        data = json.loads(text)
        data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
        return cls(**data)


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The model's one image input (graph inputs that are not initializers)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"a model fstore runs needs exactly one image input, not: {names}")
    return inputs[0]


def prefix_node_names(model: onnx.ModelProto) -> list[str]:
    """Names of the prefix's nodes, to keep them out of quantization and fp16 conversion."""
    return [node.name for node in model.graph.node if node.name.startswith(NODE_PREFIX)]


def has_prefix(model: onnx.ModelProto) -> bool:
    props = {p.key: p.value for p in model.metadata_props}
    return InputSpec.from_props(props) is not None


def _nchw_dims(value: onnx.ValueInfoProto) -> list:
    import onnx

    tensor = value.type.tensor_type
    dims = list(tensor.shape.dim)
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    if len(dims) != 4 or tensor.elem_type not in float_types:
        raise ModelError(
            f"input {value.name!r} is not a float NCHW image batch (rank {len(dims)}, "
            f"type {onnx.TensorProto.DataType.Name(tensor.elem_type)}); fstore cannot add its "
            "uint8 input to it"
        )
    if dims[1].HasField("dim_value") and dims[1].dim_value != 3:
        raise ModelError(f"input {value.name!r} has {dims[1].dim_value} channels, not 3 (RGB)")
    return dims


def _prefix_nodes(target: str, elem_type: int, spec: InputSpec) -> tuple[list, list]:
    from onnx import TensorProto, helper, numpy_helper

    def name(step: str) -> str:
        return NODE_PREFIX + step

    # One multiply-add instead of three passes: x * (1 / (255 std)) + (-mean / std) equals
    # (x / 255 - mean) / std within float32 rounding (tested against torchvision, 1e-5).
    std = np.asarray(spec.std, np.float32)
    mean = np.asarray(spec.mean, np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, 3, 1, 1)
    shift = (-mean / std).astype(np.float32).reshape(1, 3, 1, 1)
    consts = [
        numpy_helper.from_array(scale, name("scale")),
        numpy_helper.from_array(shift, name("shift")),
    ]
    steps = [
        ("Transpose", [IMAGE_INPUT], {"perm": [0, 3, 1, 2]}),
        ("Cast", [None], {"to": TensorProto.FLOAT}),
        ("Mul", [None, name("scale")], {}),
        ("Add", [None, name("shift")], {}),
    ]
    if elem_type != TensorProto.FLOAT:
        steps.append(("Cast", [None], {"to": elem_type}))
    nodes, previous = [], None
    for i, (op, inputs, attrs) in enumerate(steps):
        out = target if i == len(steps) - 1 else name(f"{i}_{op.lower()}")
        inputs = [previous if x is None else x for x in inputs]
        nodes.append(helper.make_node(op, inputs, [out], name=name(f"{i}_{op.lower()}"), **attrs))
        previous = out
    return nodes, consts


def add_prefix(model: onnx.ModelProto, mean, std) -> onnx.ModelProto:
    """Give ``model`` (float NCHW input) a uint8 NHWC RGB input and the normalisation prefix.

    Modifies and returns ``model``. The old input's name becomes the prefix's output, so the
    rest of the graph is untouched. A model already wrapped is returned as it is.
    """
    from onnx import TensorProto, helper

    if has_prefix(model):
        return model
    old = image_input(model)
    n, _, h, w = _nchw_dims(old)
    spec = InputSpec(mean=tuple(map(float, mean)), std=tuple(map(float, std)))
    shape = [d.dim_param or d.dim_value or None for d in (n, h, w)] + [3]
    new_input = helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, shape)
    nodes, consts = _prefix_nodes(old.name, old.type.tensor_type.elem_type, spec)
    graph = model.graph
    kept = [i for i in graph.input if i.name != old.name]
    del graph.input[:]
    graph.input.extend([new_input, *kept])
    graph.initializer.extend(consts)
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body)
    entry = model.metadata_props.add()
    entry.key, entry.value = PROP_INPUT, spec.to_json()
    return model


def remove_prefix(model: onnx.ModelProto) -> InputSpec | None:
    """Take the prefix off ``model`` (in place): its float NCHW input comes back.

    Returns the removed spec, ``None`` (and the model untouched) when it had no prefix. Used to
    convert a model to fp16 without rounding its normalisation, then :func:`add_prefix` again.
    """
    from onnx import TensorProto, helper

    props = {p.key: p.value for p in model.metadata_props}
    spec = InputSpec.from_props(props)
    if spec is None:
        return None
    graph = model.graph
    ours = [n for n in graph.node if n.name.startswith(NODE_PREFIX)]
    target = ours[-1].output[0]
    casts = [n for n in ours if n.op_type == "Cast"][1:]  # the first casts the pixels
    elem_type = casts[0].attribute[0].i if casts else TensorProto.FLOAT
    image = next(i for i in graph.input if i.name == IMAGE_INPUT)
    n, h, w, _ = (d.dim_param or d.dim_value or None for d in image.type.tensor_type.shape.dim)
    rest = [n_ for n_ in graph.node if not n_.name.startswith(NODE_PREFIX)]
    del graph.node[:]
    graph.node.extend(rest)
    consts = [i for i in graph.initializer if not i.name.startswith(NODE_PREFIX)]
    del graph.initializer[:]
    graph.initializer.extend(consts)
    kept = [i for i in graph.input if i.name != IMAGE_INPUT]
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(target, elem_type, [n, 3, h, w]), *kept])
    others = [p for p in model.metadata_props if p.key != PROP_INPUT]
    del model.metadata_props[:]
    model.metadata_props.extend(others)
    return spec
