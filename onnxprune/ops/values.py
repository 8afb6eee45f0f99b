"""Values of small shape computations (Shape → Gather → arithmetic → Concat), worked
out from the static sizes the graph view knows, as exporters write the bounds of
`torch.chunk` or the targets of a Reshape."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import GraphView

# Nodes of a shape computation followed back from a value (as in `shape.py`).
VALUE_DEPTH = 12
ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.floor_divide,
              "Mod": np.mod, "Max": np.maximum, "Min": np.minimum}


def static_value(name: str, view: GraphView, depth: int = VALUE_DEPTH) -> np.ndarray | None:
    """Integer values of a tensor that every input size gives the same, or None."""
    value = _value(view.tensors.get(name), view, depth)
    if value is None or any(v is None for v in np.asarray(value, dtype=object).reshape(-1)):
        return None
    return np.asarray(value, dtype=np.int64)


def _value(tensor: gs.Tensor | None, view: GraphView, depth: int):
    """An object array (None where a size is not static), or None when unknown."""
    if tensor is None or depth == 0:
        return None
    if isinstance(tensor, gs.Constant):
        values = np.asarray(tensor.values)
        return values.astype(object) if values.dtype.kind in "iu" else None
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is None:
        return None
    if producer.op == "Shape":
        return _shape(producer, view)
    inputs = [_value(t, view, depth - 1) if t.name else None for t in producer.inputs]
    try:
        return _apply(producer, inputs)
    except (TypeError, ValueError, IndexError):  # a None entry met arithmetic, bad indices
        return None


def _shape(node: gs.Node, view: GraphView):
    shape = view.shape(node.inputs[0].name)
    if shape is None:
        return None
    rank = len(shape)
    start = int(node.attrs.get("start", 0))
    end = int(node.attrs.get("end", rank))
    dims = [d if isinstance(d, int) else None for d in shape]
    return np.array(dims[slice(start, end)], dtype=object)


def _apply(node: gs.Node, inputs: list):
    op, first = node.op, inputs[0] if inputs else None
    if op in ARITHMETIC and len(inputs) == 2 and all(v is not None for v in inputs):
        return ARITHMETIC[op](inputs[0], inputs[1])
    if first is None:
        return None
    if op in ("Cast", "Identity"):
        return first
    if op == "Gather" and int(node.attrs.get("axis", 0)) == 0 and inputs[1] is not None:
        return first[np.asarray(inputs[1], dtype=np.int64)]
    if op in ("Unsqueeze", "Squeeze", "Reshape"):
        return _reshaped(node, first, inputs)
    if op == "Concat" and all(v is not None for v in inputs):
        return np.concatenate([np.reshape(v, -1) for v in inputs])
    return None


def _reshaped(node: gs.Node, value, inputs: list):
    if node.op == "Reshape":
        target = inputs[1]
        return None if target is None else np.reshape(value, np.asarray(target, np.int64))
    axes = node.attrs.get("axes")
    if axes is None:
        axes = None if len(inputs) < 2 or inputs[1] is None else list(inputs[1])
    if node.op == "Squeeze":
        return np.squeeze(value, axis=None if axes is None else tuple(int(a) for a in axes))
    return None if axes is None else np.expand_dims(value, tuple(int(a) for a in axes))
