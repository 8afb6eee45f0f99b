"""Key/value-cache pairs: a graph input (the past) that a Concat joins with new values
into a graph output (the present). Paired by the graph, never by names: a pair's axes
other than the joined one may lose indices, on both sides alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import ModelProto

# Sequence length of the new tokens in sample shapes (every other symbolic axis has it).
NEW_TOKENS = 64


@dataclass(frozen=True)
class CachePair:
    """`past` (graph input) + new values, joined on `axis`, is `present` (graph output)."""

    past: str
    present: str
    axis: int


@dataclass(frozen=True)
class IoChange:
    """A graph input or output that lost indices on one axis."""

    name: str
    kind: str  # "input" or "output"
    axis: int
    before: int
    after: int
    removed: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "axis": self.axis,
                "before": self.before, "after": self.after, "removed": list(self.removed)}


def cache_pairs(model: ModelProto) -> list[CachePair]:
    """Every past/present pair of a model's main graph: a graph input read (through
    Identity or one-input Concat copies) by a Concat whose result is a graph output."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    outputs = {v.name for v in graph.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input):
            readers.setdefault(name, []).append(node)
    pairs = []
    for value in graph.input:
        if value.name in inits or not value.type.tensor_type.HasField("shape"):
            continue
        node = _joiner(value.name, readers)
        if node is not None and node.output[0] in outputs:
            rank = len(value.type.tensor_type.shape.dim)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            pairs.append(CachePair(value.name, node.output[0], axis % rank if rank else axis))
    return pairs


def _joiner(name: str, readers: dict[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
    """The Concat joining `name` (or its copies) with other values, if it is the only
    reader all along the way (besides readers of its shape)."""
    for _ in range(8):
        users = [n for n in readers.get(name, []) if n.op_type not in ("Shape", "Size")]
        if len(users) != 1 or users[0].domain not in ("", "ai.onnx"):
            return None
        node = users[0]
        if node.op_type == "Concat" and len(node.input) > 1:
            return node if list(node.input).count(name) == 1 else None
        if node.op_type not in ("Identity", "Concat") or len(node.output) != 1:
            return None
        name = node.output[0]
    return None


def pair_slots(pairs: list[CachePair]) -> dict[str, tuple[str, int]]:
    """Per cache tensor: its partner and the joined axis."""
    ends = {p.past: (p.present, p.axis) for p in pairs}
    ends.update({p.present: (p.past, p.axis) for p in pairs})
    return ends


def sample_sizes(model: ModelProto, pairs: list[CachePair]) -> dict[str, int]:
    """Sizes of symbolic axes named as a present's joined axis (the past and the new
    tokens together: an attention mask's length), for sample inputs where the past
    and the new tokens each hold `NEW_TOKENS` positions."""
    sizes: dict[str, int] = {}
    outputs = {v.name: v for v in model.graph.output}
    inputs = {v.name: v for v in model.graph.input}
    for pair in pairs:
        dims = outputs[pair.present].type.tensor_type.shape.dim
        past = inputs[pair.past].type.tensor_type.shape.dim
        if pair.axis < len(dims) and dims[pair.axis].dim_param and \
                pair.axis < len(past) and not past[pair.axis].HasField("dim_value"):
            sizes[dims[pair.axis].dim_param] = 2 * NEW_TOKENS
    return sizes


def io_names(model: ModelProto) -> set[str]:
    """Names of the graph inputs and outputs (the tensors `io_changes` looks at)."""
    return {v.name for v in [*model.graph.input, *model.graph.output]}


def io_changes(model: ModelProto, removed: dict) -> list[IoChange]:
    """The graph inputs and outputs that lose indices under `removed` (slot -> indices),
    as they are declared in `model` (initializers declared as inputs are weights)."""
    changes = []
    weights = {t.name for t in model.graph.initializer}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            if value.name in weights:
                continue
            for slot, idx in sorted(removed.items()):
                if slot.tensor != value.name:
                    continue
                dim = value.type.tensor_type.shape.dim[slot.axis]
                before = dim.dim_value if dim.HasField("dim_value") else -1
                after = before - len(idx) if before > 0 else -1
                changes.append(IoChange(value.name, kind, slot.axis, before, after,
                                        tuple(int(i) for i in idx)))
    return changes


def shrink_io(model: ModelProto, changes: list[IoChange]) -> None:
    """Rewrite the declared sizes of changed graph inputs and outputs in place."""
    values = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    for change in changes:
        if change.name not in values:
            continue
        dim = values[change.name].type.tensor_type.shape.dim[change.axis]
        if change.after > 0:
            dim.dim_value = change.after


def cut_feeds(feeds: dict[str, np.ndarray], changes: list[IoChange], kind: str
              ) -> dict[str, np.ndarray]:
    """Feeds (or outputs) of the original model as the pruned model takes (or gives)
    them: the changed inputs (or outputs) without their removed indices."""
    cut = dict(feeds)
    for change in changes:
        if change.kind == kind and change.name in cut:
            cut[change.name] = np.delete(cut[change.name], list(change.removed), change.axis)
    return cut


def declared_shape(value: onnx.ValueInfoProto) -> list[int | str]:
    """A graph input's or output's shape: sizes or symbol names."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value.type.tensor_type.shape.dim]


def prompt_shapes(model: ModelProto) -> dict[str, tuple[int, ...]]:
    """Sample input shapes of a prompt pass: the cache inputs empty (no past positions),
    a symbolic axis named as a present's joined axis as long as the new tokens."""
    from .shapes import sample_shapes

    shapes = sample_shapes(model)
    pairs = cache_pairs(model)
    joined = set(sample_sizes(model, pairs))
    for value in model.graph.input:
        if value.name not in shapes:
            continue
        dims = list(shapes[value.name])
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param in joined:
                dims[axis] = NEW_TOKENS
        shapes[value.name] = tuple(dims)
    for pair in pairs:
        dims = list(shapes[pair.past])
        dims[pair.axis] = 0
        shapes[pair.past] = tuple(dims)
    return shapes


def cache_shrunk(first: ModelProto, second: ModelProto) -> bool:
    """Whether `second` declares smaller cache inputs than `first`."""
    declared = {v.name: declared_shape(v) for v in second.graph.input}
    return any(declared.get(v.name) not in (None, declared_shape(v))
               for v in first.graph.input if v.name in {p.past for p in cache_pairs(first)})
