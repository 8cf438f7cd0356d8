"""Layers of any torchvision or timm network: its own fx node names, a few aliases, the cut.

The network is traced by torchvision's ``NodePathTracer`` (with timm's leaf modules for timm
models), as ``torchvision.models.feature_extraction`` does. Every node whose output is a tensor
of one image per batch row is a layer, named by its module path (``layer3.5.relu_2``,
``features.4``, ``blocks.2.attn``); a module's name (``layer3``) stands for its last node, as
in ``create_feature_extractor``. :func:`layer_table` runs the network once on a blank picture
and records each layer's output shape, parameters and multiply-adds (counted by
``torch.utils.flop_counter``).

Aliases:

* ``pooled``: the network's own pre-logits features, the input of the layer that computes the
  logits (timm's ``forward_head(pre_logits=True)``; the input of torchvision's last ``Linear``).
* ``logits``: the network's output.
* ``stage1`` … ``stageN``: the end of each resolution: timm's ``feature_info`` modules, else the
  last of the network's top-level parts at each feature map size (``layer1`` … ``layer4`` of
  a ResNet, ``features.N`` of an EfficientNet, MobileNet or ConvNeXt).
* ``block1`` … ``blockN``: the blocks of a token network (torchvision's ViT encoder layers).

A Vision Transformer's token outputs, ``(tokens, channels)`` per image, are reduced to one
vector, by the suffix of the layer's name: ``NAME:cls`` takes the class token (the first token),
``NAME:mean`` the mean of the patch tokens (class and register tokens left out, as timm's
``global_pool='avg'`` does). ``NAME`` alone is ``NAME:cls`` where the network has a class token,
else ``NAME:mean``.

:func:`truncate` returns a module computing only what the deepest chosen layer needs
(``create_feature_extractor`` drops the rest of the graph) and returning the layers in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fstore.errors import UnknownLayerError
from fstore.export.architectures import (
    Architecture,
    classifier_module,
    prefix_tokens,
    tracer_options,
)

if TYPE_CHECKING:
    import torch

TOKEN_REDUCTIONS = ("cls", "mean")


@dataclass(frozen=True)
class GraphLayer:
    """One addressable node.

    Attributes:
        name: its module path (the node's qualified name).
        kind: what computes it: the module's class (``Conv2d``) or the function (``add``).
        shape: output shape of one image, batch excluded (before any token reduction).
        params: parameters of the node's module (0 for functions).
        macs: multiply-adds of the node for one image.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    macs: int

    @property
    def is_tokens(self) -> bool:
        return len(self.shape) == 2


@dataclass(frozen=True)
class Chosen:
    """A requested layer: the name it is stored under, the node, the token reduction."""

    name: str
    node: str
    reduce: str | None
    shape: tuple[int, ...]


@dataclass
class LayerTable:
    """Every layer of a traced network, in forward order, with its aliases."""

    arch: Architecture
    input_size: int
    layers: list[GraphLayer]
    aliases: dict[str, str]
    total_params: int
    prefix: int = 0
    has_cls: bool = False
    _by_name: dict[str, GraphLayer] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {layer.name: layer for layer in self.layers}

    @property
    def names(self) -> list[str]:
        return [*self.aliases, *(layer.name for layer in self.layers)]

    def _node(self, base: str) -> GraphLayer | None:
        """The layer called ``base``: an alias, a node, or a module's last node."""
        base = self.aliases.get(base, base)
        if base in self._by_name:
            return self._by_name[base]
        inside = [layer for layer in self.layers if layer.name.startswith(base + ".")]
        return inside[-1] if inside else None

    def choose(self, name: str) -> Chosen:
        """The layer called ``name`` (with a token suffix where it is a token output)."""
        base, _, suffix = name.partition(":")
        layer = self._node(base)
        if layer is None or (suffix and (suffix not in TOKEN_REDUCTIONS or not layer.is_tokens)):
            raise UnknownLayerError(self._unknown(name, layer))
        if not layer.is_tokens:
            return Chosen(name, layer.name, None, layer.shape)
        reduce = suffix or ("cls" if self.has_cls else "mean")
        return Chosen(name, layer.name, reduce, layer.shape[1:])

    def _unknown(self, name: str, layer: GraphLayer | None) -> str:
        if layer is not None:
            if not layer.is_tokens:
                return f"layer {layer.name!r} of {self.arch.name} is not a token output: drop ':'"
            return f"unknown token reduction in {name!r}; choose :{' or :'.join(TOKEN_REDUCTIONS)}"
        return f"unknown layer {name!r} of {self.arch.name}; valid layers are: " + ", ".join(
            self.names
        )

    def select(self, names: str | list[str] | tuple[str, ...]) -> tuple[Chosen, ...]:
        """Layers in forward order, without repeats (the first name of a node wins)."""
        wanted = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        if not wanted:
            raise UnknownLayerError(f"no layer given; valid layers are: {', '.join(self.names)}")
        order = {layer.name: i for i, layer in enumerate(self.layers)}
        chosen = [self.choose(name) for name in wanted]
        return tuple(sorted(chosen, key=lambda c: order[c.node]))


def _trace(model: torch.nn.Module, arch: Architecture):
    from torch import fx
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer(**(tracer_options(arch) or {}))
    graph = tracer.trace(model.eval())
    return fx.GraphModule(tracer.root, graph), tracer.node_to_qualname


def _params(node, modules: dict, gm, seen: set[int]) -> int:
    """Parameters first used by this node (shared ones are counted once)."""
    if node.op == "call_module":
        tensors = list(modules[node.target].parameters())
    elif node.op == "get_attr":
        tensors = [_attr(gm, node.target)]
    else:
        return 0
    count = 0
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            count += tensor.numel()
    return count


def _kind(node, modules: dict) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return getattr(node.target, "__name__", str(node.target))


def _attr(gm, target: str):
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _run_nodes(gm, qualnames: dict, input_size: int) -> tuple[list[GraphLayer], int]:
    """Run the graph on one blank picture: per node its shape, parameters and multiply-adds."""
    import torch
    from torch import fx
    from torch.utils.flop_counter import FlopCounterMode

    modules = dict(gm.named_modules())
    layers: list[GraphLayer] = []
    seen: set[int] = set()
    pending = {"macs": 0, "params": 0}

    class Measure(fx.Interpreter):
        def run_node(self, node):
            with FlopCounterMode(display=False) as counter:
                out = super().run_node(node)
            pending["macs"] += counter.get_total_flops() // 2
            pending["params"] += _params(node, modules, gm, seen)
            name = qualnames.get(node)
            if name is None or node.op in ("placeholder", "get_attr", "output"):
                return out
            if isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[0] == 1:
                shape = tuple(int(s) for s in out.shape[1:])
                kind = _kind(node, modules)
                layers.append(GraphLayer(name, kind, shape, pending["params"], pending["macs"]))
                pending.update(macs=0, params=0)
            return out

    with torch.inference_mode():
        Measure(gm).run(torch.zeros(1, 3, input_size, input_size))
    return layers, sum(layer.params for layer in layers) + pending["params"]


def _trunk(names: list[str]) -> list[str]:
    """The network's top-level parts, descending into a part that holds nearly every node
    (``features``, ``trunk_output``, ``encoder.layers``): its children are the stages."""
    prefix = ""
    while True:
        parts: dict[str, int] = {}
        for name in names:
            if name.startswith(prefix):
                head = name[len(prefix) :].split(".")[0]
                parts[prefix + head] = parts.get(prefix + head, 0) + 1
        total = sum(parts.values())
        big = [part for part, n in parts.items() if n > 0.8 * total and n > 1]
        if not big or not any(n.startswith(big[0] + ".") for n in names):
            return list(parts)
        prefix = big[0] + "."


def _stages(arch: Architecture, model, layers: list[GraphLayer], end: int) -> dict[str, str]:
    """``stageN``: the last node of each resolution (timm's ``feature_info`` where declared,
    else the last top-level part at that resolution); ``blockN``: each top-level part of a
    token network (a Vision Transformer's blocks). Only nodes before ``end`` (pooled)."""
    names = [layer.name for layer in layers[:end]]

    def last_in(part: str) -> GraphLayer | None:
        inside = [
            lay for lay in layers[:end] if lay.name == part or lay.name.startswith(part + ".")
        ]
        return inside[-1] if inside else None

    info = getattr(model, "feature_info", None) if arch.family == "timm" else None
    parts = [info_["module"] for info_ in info] if info else _trunk(names)
    ends = [layer for layer in map(last_in, parts) if layer is not None]
    aliases: dict[str, str] = {}
    if info:
        return {f"stage{i}": layer.name for i, layer in enumerate(ends, 1)}
    by_resolution: dict[tuple[int, ...], str] = {}
    for layer in ends:
        if len(layer.shape) == 3 and layer.shape[1:] != (1, 1):
            by_resolution[layer.shape[1:]] = layer.name
    aliases.update({f"stage{i}": name for i, name in enumerate(by_resolution.values(), 1)})
    blocks = [layer.name for layer in ends if layer.is_tokens]
    if len(blocks) > 1:
        aliases.update({f"block{i}": name for i, name in enumerate(blocks, 1)})
    return aliases


def _aliases(arch: Architecture, model, gm, qualnames: dict, layers: list[GraphLayer]):
    names = [layer.name for layer in layers]
    aliases: dict[str, str] = {}
    head = classifier_module(arch, model)
    call = next((n for n in gm.graph.nodes if n.op == "call_module" and n.target == head), None)
    if call is not None:
        source = call.args[0]
        while source.op == "call_module" and type(_attr(gm, source.target)).__name__ in (
            "Dropout",
            "Identity",
        ):
            source = source.args[0]
        if qualnames.get(source) in names:
            aliases["pooled"] = qualnames[source]
    output = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if hasattr(output, "op") and qualnames.get(output) in names:
        aliases["logits"] = qualnames[output]
    end = names.index(aliases["pooled"]) if "pooled" in aliases else len(names)
    aliases.update(_stages(arch, model, layers, end))
    return aliases


def layer_table(arch: Architecture, model: torch.nn.Module, input_size: int) -> LayerTable:
    """Every layer of ``model`` (an instance of ``arch``) at ``input_size`` pixels square."""
    gm, qualnames = _trace(model, arch)
    layers, total = _run_nodes(gm, qualnames, input_size)
    aliases = _aliases(arch, model, gm, qualnames, layers)
    count, has_cls = prefix_tokens(arch, model)
    return LayerTable(
        arch, input_size, layers, aliases, total_params=total, prefix=count, has_cls=has_cls
    )


def _reduce(x, how: str | None, prefix: int):
    if how == "cls":
        return x[:, 0]
    if how == "mean":
        return x[:, prefix:].mean(dim=1)
    return x


def truncate(
    model: torch.nn.Module, table: LayerTable, chosen: tuple[Chosen, ...]
) -> torch.nn.Module:
    """A module computing ``model`` only as far as ``chosen`` need, returning each in order."""
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = {c.node: re.sub(r"\W", "_", c.node) for c in chosen}
    extractor = create_feature_extractor(
        model.eval(),
        return_nodes=nodes,
        tracer_kwargs=tracer_options(table.arch),
        suppress_diff_warning=True,
    )
    plan = [(nodes[c.node], c.reduce) for c in chosen]

    class Truncated(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.extractor = extractor

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.extractor(x)
            return tuple(_reduce(out[key], how, table.prefix) for key, how in plan)

    return Truncated().eval()
