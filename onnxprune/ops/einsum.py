"""Einsum of an activation and a constant weight.

The equation names every axis with a letter, and axes with the same letter share one
index space: the rule couples them index for index. A letter of the weight and the
output only is produced by the weight (its `out` axis, a seed); a letter summed
between the two operands is absorbed by the weight (its `in` axis); a letter of the
activation and the output passes through. A letter summed within one operand, a
letter repeated in one operand (a diagonal), an axis broadcast against a larger one,
and every other form (one operand, three or more, two activations as in attention
scores) block.

Cost: one multiply-accumulate per combination of the letters' indices. When the
weight is 2-D with one summed letter and one output letter ("bsd,df->bsf",
"...k,nk->...n": `x·W` or `x·Wᵀ`), Einsum is a matrix product and is reconstructed,
timed and sparsified as MatMul is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .layer import added_after, matrix_contribution, per_output
from .matmul import rank_problem, rows_of
from .registry import Sink, SparseLayer, register
from .rule import Rule

ELLIPSIS = "..."


def equation_of(attrs: dict) -> str:
    """The equation attribute (bytes as ONNX stores it, or text)."""
    value = attrs.get("equation", "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _terms(equation: str) -> tuple[list[list[str]], list[str]]:
    """Letters of each operand and of the output, an ellipsis kept as one token; an
    implicit output is the ellipsis and the letters used once, in order."""
    equation = equation.replace(" ", "")
    left, arrow, right = equation.partition("->")
    inputs = [_tokens(term) for term in left.split(",")]
    if arrow:
        return inputs, _tokens(right)
    used = [t for term in inputs for t in term]
    once = sorted(t for t in set(used) if used.count(t) == 1 and t != ELLIPSIS)
    return inputs, ([ELLIPSIS] if ELLIPSIS in used else []) + once


def _tokens(term: str) -> list[str]:
    head, dots, tail = term.partition(ELLIPSIS)
    return list(head) + ([ELLIPSIS] if dots else []) + list(tail)


def _expand(term: list[str], rank: int | None) -> list[str] | None:
    """One letter per axis: the ellipsis becomes letters named by their distance from
    the last axis (operands broadcast right-aligned)."""
    if ELLIPSIS not in term:
        return term if rank is None or rank == len(term) else None
    count = None if rank is None else rank - len(term) + 1
    if count is None or count < 0:
        return None
    at = term.index(ELLIPSIS)
    return term[:at] + [f"{ELLIPSIS}{count - 1 - j}" for j in range(count)] + term[at + 1:]


def _axis_letters(node: gs.Node, view: GraphView) -> tuple[list[list[str]], int] | str:
    """Letters of every axis of both operands and the output, and the weight operand;
    or why the node is not an Einsum of an activation and a weight."""
    inputs, output = _terms(equation_of(node.attrs))
    names = [t.name for t in node.inputs]
    weights = [i for i, name in enumerate(names) if view.is_weight(name)]
    if len(inputs) != 2 or len(names) != 2 or len(weights) != 1 or names[0] == names[1]:
        return "only two operands, one of them a constant weight, are followed"
    ranks = [view.rank(name) for name in names]
    terms = [_expand(term, rank) for term, rank in zip(inputs, ranks, strict=True)]
    if None in terms:
        return "operand ranks unknown or not those of the equation"
    width = max(len([t for t in term if t.startswith(ELLIPSIS)]) for term in terms)
    out = _expand(output, width + len(output) - 1 if ELLIPSIS in output else None)
    return terms + [out], weights[0]


class Einsum(Rule):
    """Axes with one letter are one index space (see the module docstring)."""

    def seeds(self, node: gs.Node, view: GraphView) -> list[Slot]:
        found = _axis_letters(node, view)
        if isinstance(found, str):
            return []
        terms, weight = found
        return [Slot(node.inputs[weight].name, axis) for axis, letter in enumerate(terms[weight])
                if letter in terms[2] and letter not in terms[1 - weight]
                and terms[weight].count(letter) == 1]

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        found = _axis_letters(node, view)
        if isinstance(found, str):
            edges.block(slot, f"Einsum {node.name}: {found}")
            return
        terms, weight = found
        names = [t.name for t in node.inputs] + [node.outputs[0].name]
        letter = terms[names.index(slot.tensor)][slot.axis]
        holders = [Slot(names[i], axis) for i, term in enumerate(terms)
                   for axis, other in enumerate(term) if other == letter]
        summed = letter not in terms[2]
        reason = _blocked(holders, summed, names[2])
        if slot not in _unbroadcast(holders, view):
            reason = reason or f"axis {slot.axis} of {slot.tensor} is broadcast"
        if reason:
            edges.block(slot, f"Einsum {node.name}: {reason}")
            return
        for other in _unbroadcast(holders, view):
            if other != slot:
                role = Role.ACT if other.tensor != names[weight] else (
                    Role.IN if summed else Role.OUT)
                edges.same(slot, other, role)


def _blocked(holders: list[Slot], summed: bool, output: str) -> str:
    """Why a letter's axes cannot lose indices ("" when they can)."""
    operands = [s.tensor for s in holders if s.tensor != output]
    if len(operands) != len(set(operands)):
        return "a letter repeated in one operand (a diagonal)"
    if summed and len(operands) < 2:
        return "this axis is summed within one operand"
    return ""


def _unbroadcast(holders: list[Slot], view: GraphView) -> list[Slot]:
    """The axes of a letter that are not broadcast (size 1 against a larger size)."""
    sizes = [view.dim(s) for s in holders]
    wide = any(size is not None and size > 1 for size in sizes)
    return [s for s, size in zip(holders, sizes, strict=True) if not (wide and size == 1)]


def _macs(node: gs.Node, shape_of) -> int:
    inputs, _ = _terms(equation_of(node.attrs))
    shapes = [shape_of(t.name) for t in node.inputs]
    if len(inputs) != len(shapes) or len(shapes) < 2 or any(s is None for s in shapes):
        return 0
    sizes: dict[str, int] = {}
    for term, shape in zip(inputs, shapes, strict=True):
        letters = _expand(term, len(shape))
        if letters is None:
            return 0
        for letter, size in zip(letters, shape, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), int(size))
    return math.prod(sizes.values()) * (len(shapes) - 1)


@dataclass(frozen=True)
class Product:
    """An Einsum that is the matrix product of an activation x and a 2-D weight: the
    weight (operand `weight`) is summed over its axis `k` against the activation's
    axis `x_k` (counted from the back when negative); its other axis is the output's
    letter n, the output's last one when `n_last`."""

    weight: int
    k: int
    x_k: int
    n_last: bool


def product(equation: str, weight: int) -> Product | None:
    """The matrix product an equation computes with operand `weight` as the weight."""
    inputs, output = _terms(equation)
    if len(inputs) != 2 or weight not in (0, 1):
        return None
    w, x = inputs[weight], inputs[1 - weight]
    shared = [letter for letter in w if letter in x]
    if len(w) != 2 or ELLIPSIS in w or len(set(w)) != 2 or len(shared) != 1:
        return None
    k, n = shared[0], w[1 - w.index(shared[0])]
    if len(set(x)) != len(x) or len(set(output)) != len(output) or k in output or \
            sorted(output) != sorted([t for t in x if t != k] + [n]):
        return None
    at = x.index(k)
    x_k = at - len(x) if ELLIPSIS in x[:at] else at
    return Product(weight, w.index(k), x_k, output[-1] == n)


def _product_of(node: gs.Node, weight: gs.Tensor | None = None) -> Product | None:
    """The node's matrix product with its constant operand (or `weight`) as the weight."""
    picks = [i for i, t in enumerate(node.inputs) if (t is weight if weight is not None
                                                      else isinstance(t, gs.Constant))]
    if len(node.inputs) != 2 or len(picks) != 1:
        return None
    return product(equation_of(node.attrs), picks[0])


def _bias(node: gs.Node):
    found = _product_of(node)
    if found is None or not found.n_last:
        return None
    shape = node.inputs[found.weight].shape
    return added_after(node, shape[1 - found.k] if shape else None)


def _contribution(node: gs.Node, values: np.ndarray, axis: int, means: np.ndarray):
    return matrix_contribution(values, axis, means) if _product_of(node) else None


def _refittable(node: gs.Node, weight: gs.Constant) -> bool:
    return _product_of(node, weight) is not None


def _output_shift(node: gs.Node, weight: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return per_output(weight, shift)


def _timed(node: gs.Node) -> bool:
    return _product_of(node) is not None


def _operands(attrs: dict) -> list[tuple[int, int]]:
    found = [product(equation_of(attrs), index) for index in (0, 1)]
    return [(p.weight, p.k) for p in found if p is not None]


def _input_rows(layer, value: np.ndarray, seed: int) -> np.ndarray:
    found = product(equation_of(layer.attrs), layer.input_index)
    moved = np.moveaxis(value, found.x_k, -1)
    return moved.reshape(-1, moved.shape[-1])


def _input_key(layer) -> tuple:
    return layer.activation, layer.op, equation_of(layer.attrs), layer.input_index


register("Einsum", rule=Einsum(), compute=True, macs=_macs, products=True,
         sink=Sink(_bias, _contribution, _refittable, _output_shift), timed=_timed,
         sparse=SparseLayer(_operands, rank_problem, rows_of, _input_rows,
                            lambda layer, gram: None, _input_key))
