"""What a network is, for the report's Network section: VGG16's layer table, or any ONNX model's
inputs, outputs and parameter count read from the file (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_summary(model: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Input, outputs (with ``shapes``, one image's output shape, where known), parameters
    (initializer elements) and node counts of an ONNX file."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    graph = proto.graph
    params = sum(int(np.prod(t.dims)) for t in graph.initializer)
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    shapes = shapes or {}
    outputs = [
        {
            "name": o.name,
            "shape": list(shapes.get(o.name, ())),
            "size": int(np.prod(shapes[o.name])) if o.name in shapes else None,
        }
        for o in graph.output
    ]
    return {
        "file": str(model),
        "bytes": Path(model).stat().st_size,
        "opset": max(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0
        ),
        "input": {"name": inputs[0].name, "shape": dims},
        "outputs": outputs,
        "total_params": params,
        "initializers": len(graph.initializer),
        "nodes": len(graph.node),
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
    }
