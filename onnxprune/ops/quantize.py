"""QuantizeLinear and DequantizeLinear: every axis passes through; a per-axis scale
and zero point are sliced with the channels of their axis.

Both are weight views the dependency graph sees through (int8 weights); the
sparsifier reads and writes a weight through DequantizeLinear (8- and 16-bit integers,
per tensor or per axis)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .registry import WeightView, register
from .rule import Rule


class Quantize(Rule):
    """x and y share every axis; scale and zero point follow `axis` when 1-D."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x, y = node.inputs[0].name, node.outputs[0].name
        rank = view.rank(x)
        params = [t.name for t in node.inputs[1:3] if t.name]
        if rank is None or node.attrs.get("block_size"):
            edges.block(slot, f"{node.op} {node.name}: blocked quantization")
            return
        axis = int(node.attrs.get("axis", 1)) % rank
        per_axis = [p for p in params if view.rank(p) == 1 and (view.dim(Slot(p, 0)) or 1) > 1]
        if slot.tensor in params:
            data_axis = axis
        elif slot.tensor in (x, y):
            data_axis = slot.axis
        else:
            return
        for name in (x, y):
            if Slot(name, data_axis) != slot:
                edges.same(slot, Slot(name, data_axis), Role.ACT)
        if data_axis == axis:
            for name in per_axis:
                if Slot(name, 0) != slot:
                    edges.same(slot, Slot(name, 0), Role.PARAM)


QUANT_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
               onnx.TensorProto.UINT16)


def _quant_params(values: np.ndarray, attrs: dict, params):
    """Scale and zero point broadcast against the quantized values."""
    scale = params(1)
    zero = params(2)
    zero = np.zeros_like(scale, dtype=values.dtype) if zero is None else zero
    if scale.ndim == 1 and values.ndim > 1:
        shape = [1] * values.ndim
        shape[attrs.get("axis", 1) % values.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale, zero.astype(np.float32)


def _dequantize(values: np.ndarray, attrs: dict, params) -> np.ndarray:
    scale, zero = _quant_params(values, attrs, params)
    return ((values.astype(np.float32) - zero) * scale).astype(scale.dtype)


def _quantize(values: np.ndarray, attrs: dict, params) -> np.ndarray:
    stored = params(0)
    scale, zero = _quant_params(stored, attrs, params)
    info = np.iinfo(stored.dtype)
    return np.clip(np.round(values / scale) + zero, info.min, info.max)


def _problem(attrs: dict, inputs: list) -> str | None:
    if attrs.get("block_size", 0):
        return "block-quantized weight (DequantizeLinear block_size)"
    if any(tensor is None for tensor in inputs):
        return "quantized weight, scale or zero point computed at run time"
    if inputs[0].data_type not in QUANT_TYPES:
        return "quantized weight type not supported (8 and 16-bit integers are)"
    return None


def _zero_point(node: gs.Node, zero: np.ndarray) -> np.ndarray:
    """The zero point (per tensor or per axis) broadcast over stored zeros; blocked
    quantization is left at zero."""
    point = node.inputs[2] if len(node.inputs) >= 3 else None
    if not isinstance(point, gs.Constant):
        return zero
    values = np.asarray(point.values)
    if values.size == 1:
        return zero + values.reshape(()).astype(zero.dtype)
    if values.ndim != 1:
        return zero
    axis = int(node.attrs.get("axis", 1)) % zero.ndim
    shape = [1] * zero.ndim
    shape[axis] = values.size
    return zero + values.reshape(shape).astype(zero.dtype)


register("QuantizeLinear", rule=Quantize(), view=WeightView(True))
register("DequantizeLinear", rule=Quantize(), view=WeightView(
    True, _dequantize, _quantize, dtype=lambda stored, attrs: onnx.TensorProto.FLOAT,
    problem=_problem, dequantizes=True, zero=_zero_point))
