"""An ONNX graph as a program of translated steps, and the interpreter that runs it.

Values are numpy arrays (constants: initializers that are not trained, and shape
plumbing computed from them and from the fixed input shapes) or JAX arrays (data and
trainable parameters). Steps whose translation is written for both array modules run
in numpy while all their inputs are constants, so under `jax.jit` the traced program
holds only static shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, OnnxPruneError, first_line
from .registry import ONNX_DOMAINS, REFUSED, Node, Translation, key, lookup

Edge = tuple[str, str]  # (first output of the step that reads a tensor, that tensor)


@dataclass(frozen=True)
class Step:
    """One node: its op, its tensors and its translation."""

    op: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    translation: Translation

    @property
    def label(self) -> str:
        return f"{key(self.domain, self.op)} node '{self.name}'"


@dataclass(frozen=True)
class Program:
    """The steps of a graph in topological order, with its opset and constants."""

    steps: tuple[Step, ...]
    opset: int
    constants: dict[str, np.ndarray]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values; tensors as numpy arrays."""
    values = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        values[attr.name] = numpy_helper.to_array(value) \
            if isinstance(value, onnx.TensorProto) else value
    return values


def untranslated(graph: onnx.GraphProto) -> list[str]:
    """The ops of a graph that have no translation, each named once with a node (and
    the reason, for ops refused on purpose)."""
    missing = {}
    for index, node in enumerate(graph.node):
        if lookup(node.domain, node.op_type) is None:
            domain = "" if node.domain in ONNX_DOMAINS else node.domain
            reason = REFUSED.get((domain, node.op_type))
            where = f"node '{node.name or index}'" + (f": {reason}" if reason else "")
            missing.setdefault(key(node.domain, node.op_type), where)
    return [f"{op} ({where})" for op, where in missing.items()]


def steps_of(graph: onnx.GraphProto) -> tuple[Step, ...]:
    """Every node of a graph as a step; refuses a graph with untranslated ops."""
    missing = untranslated(graph)
    if missing:
        raise InputError(f"cannot translate to JAX: no translation of {', '.join(missing)}")
    return tuple(
        Step(n.op_type, n.domain, n.name or f"{n.op_type}_{i}", tuple(n.input),
             tuple(n.output), attributes(n), lookup(n.domain, n.op_type))
        for i, n in enumerate(graph.node))


def needed(steps: Iterable[Step], outputs: Iterable[str]) -> list[Step]:
    """The steps that compute `outputs`, in order."""
    wanted, kept = set(outputs), []
    for step in reversed(list(steps)):
        if wanted.intersection(step.outputs):
            kept.append(step)
            wanted.update(name for name in step.inputs if name)
    return kept[::-1]


def is_constant(value: Any) -> bool:
    return value is None or isinstance(value, np.ndarray | np.generic)


def run(program: Program, params: dict[str, Any], inputs: dict[str, Any],
        outputs: Iterable[str] | None = None, options: dict[str, Any] | None = None,
        taps: dict[Edge, Callable[[Any], Any]] | None = None) -> dict[str, Any]:
    """The values of `outputs` (the graph outputs by default) for these parameters
    and inputs; a pure function of its arguments, fit for `jax.jit` and `jax.grad`.
    `taps`: per edge (first output of the reading step, tensor read) a function
    applied to the value that step reads (masks and perturbations for gradients)."""
    outputs = tuple(outputs or program.outputs)
    missing = [name for name in program.inputs if name not in inputs]
    if missing:
        raise InputError(f"no value for the model input {missing[0]}")
    values: dict[str, Any] = dict(program.constants)
    values.update({name: jnp.asarray(value) for name, value in params.items()})
    values.update({name: jnp.asarray(value) for name, value in inputs.items()})
    for step in needed(program.steps, outputs):
        args = [values[name] if name else None for name in step.inputs]
        if taps:
            args = [taps[(step.outputs[0], name)](arg) if (step.outputs[0], name) in taps
                    else arg for name, arg in zip(step.inputs, args, strict=True)]
        results = apply(step, args, program.opset, options or {})
        values.update(zip(step.outputs, results, strict=False))
    return {name: values[name] for name in outputs}


def apply(step: Step, args: list[Any], opset: int, options: dict[str, Any]) -> tuple:
    """One step's outputs; a failure is an InputError that names the node."""
    constant = all(is_constant(a) for a in args)
    node = Node(step.op, step.name, step.attrs, opset,
                np if step.translation.numpy and constant else jnp, options,
                len(step.outputs), step.domain)
    for index in step.translation.static:
        if index < len(args) and not is_constant(args[index]):
            raise node.refuse(f"input {index} ({step.inputs[index]}) is computed from "
                              "data or trainable weights, not from shapes and constants")
    try:
        result = step.translation.fn(node, *args)
    except OnnxPruneError:
        raise
    except Exception as exc:
        raise node.refuse(first_line(exc)) from None
    results = result if isinstance(result, tuple) else (result,)
    return tuple(np.asarray(r) if isinstance(r, np.generic) else r for r in results)
