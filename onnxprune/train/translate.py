"""An ONNX model as a pure JAX function `f(params, inputs) -> outputs`.

    translated = translate(model)
    outputs = jax.jit(translated.function())(translated.params, feeds)

`params` are the trainable weights: the float initializers (and float Constant
values) with more than one element from which no static input (a shape, scales,
axes) is computed. Every other tensor is a constant of the program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto

from .. import external
from ..errors import InputError
from . import ops  # noqa: F401  (registers every translation)
from .ops.quantize import STE_DTYPE
from .program import Program, Step, apply, attributes, run, steps_of

SHAPE_READERS = {"Shape", "Size"}  # read only their input's shape


@dataclass(frozen=True)
class Translated:
    """A translated model: its program, its trainable parameters and options."""

    program: Program
    params: dict[str, np.ndarray]
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, params: dict[str, Any], inputs: dict[str, Any],
                 outputs: Iterable[str] | None = None) -> dict[str, Any]:
        return run(self.program, params, inputs, outputs, self.options)

    def function(self, outputs: Iterable[str] | None = None) -> Callable[..., dict]:
        """`f(params, inputs) -> {name: value}` for `outputs` (the graph's by default)."""
        names = tuple(outputs or self.program.outputs)
        program, options = self.program, self.options

        def f(params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
            return run(program, params, inputs, names, options)
        return f


def translate(model: ModelProto, **options: Any) -> Translated:
    """Translate a model; refuses one with an op that has no translation, naming it.
    Options: `depthwise` ("auto", "conv" or "slices") and `conv_weight_grad` ("auto",
    "host" or "xla"), see `ops.conv`."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    tensors = {t.name: np.array(external.array(t)) for t in graph.initializer}
    nodes = [n for n in graph.node if not _constant_node(n)]
    tensors.update({n.output[0]: _constant_value(n) for n in graph.node if _constant_node(n)})
    sub = onnx.GraphProto()
    sub.node.extend(nodes)
    steps = quantized_weights(steps_of(sub), tensors, opset)
    fixed = static_sources(steps)
    params = {name: value for name, value in tensors.items()
              if trainable(value) and name not in fixed}
    constants = {name: value for name, value in tensors.items() if name not in params}
    inputs = tuple(v.name for v in graph.input if v.name not in tensors)
    program = Program(steps, opset, constants, inputs, tuple(o.name for o in graph.output))
    return Translated(program, params, {"depthwise": "auto", "conv_weight_grad": "auto", **options})


def quantized_weights(steps: tuple[Step, ...], tensors: dict[str, np.ndarray],
                      opset: int) -> tuple[Step, ...]:
    """Integer initializers read only by DequantizeLinear become their dequantized float
    values (trained by straight-through rounding, see `ops.quantize`)."""
    readers: dict[str, list[Step]] = {}
    for step in steps:
        for name in step.inputs:
            readers.setdefault(name, []).append(step)
    result = []
    for step in steps:
        name = step.inputs[0] if step.inputs else ""
        value = tensors.get(name)
        if step.op == "DequantizeLinear" and value is not None \
                and np.issubdtype(value.dtype, np.integer) \
                and len(readers[name]) == 1:
            args = [tensors.get(n) if n else None for n in step.inputs]
            tensors[name] = apply(step, args, opset, {})[0]
            step = replace(step, attrs={**step.attrs, STE_DTYPE: value.dtype})
        result.append(step)
    return tuple(result)


def trainable(value: np.ndarray) -> bool:
    """Float tensors with more than one element are weights; scalars are constants."""
    return np.issubdtype(value.dtype, np.floating) and value.size > 1


def static_sources(steps: Iterable[Step]) -> set[str]:
    """Tensors from which a static input is computed (through any op but Shape/Size)."""
    steps = list(steps)
    producer = {name: step for step in steps for name in step.outputs}
    stack = [step.inputs[i] for step in steps for i in step.translation.static
             if i < len(step.inputs) and step.inputs[i]]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        step = producer.get(name)
        if step is not None and step.op not in SHAPE_READERS:
            stack.extend(n for n in step.inputs if n)
    return seen


def _constant_node(node: onnx.NodeProto) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attrs = attributes(node)
    for name, dtype in (("value", None), ("value_float", np.float32),
                        ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if name in attrs:
            return np.asarray(attrs[name], dtype=dtype)
    raise InputError(f"cannot translate Constant node '{node.name}' to JAX: only dense "
                     "numeric values are translated")
