"""The op registry: everything the pipeline knows about an op type, registered by the
one module of its family (`onnxprune/ops/<family>.py`).

A family module calls `register(*op_types, rule=..., <hooks>)` once per set of op
types that share their knowledge. The rest of the package asks the registry
(`family_for`, `family_of`) instead of listing op types:

- `rule` (required): the channel rule the dependency graph propagates through.
- `compute`: the op does multiply-accumulate work; it must then have `macs`.
- `macs`: multiply-accumulates from a shape function (cost, MACs and energy budgets).
- `products`: a matrix product; the groups it produces are "neuron" groups.
- `sink`: a constant weight that absorbs channels: its bias carrier, the mean
  contribution of removed inputs (bias compensation), and its least-squares refit.
- `timed`: whether a node is timed alone, as a one-node model (latency tables).
- `sparse`: the weight operands sparse kernels read and the layer's input matrix.
- `view`: the op presents a stored weight to the op that reads it (Cast, Transpose...).

Keys are op types for the default domain and "domain::op" for others. Family modules
are imported on the first query, so importing this module pulls nothing else in;
`families()` lists every registration (the registry's own test walks it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    from ..sparsity.layers import Layer
    from .rule import Rule

ShapeOf = Callable[[str], tuple[int, ...] | None]
# A bias carrier: the constant that adds per output channel after a layer, and the
# factor (a scalar or one per channel) a unit of the layer's output becomes in it.
Carrier = tuple[gs.Constant, float | np.ndarray]

# Views between a stored weight and the op that reads it (a Cast of a DequantizeLinear
# of an int8 constant is two): exporters write at most a few.
VIEW_DEPTH = 4


@dataclass(frozen=True)
class Sink:
    """A layer whose constant weight absorbs channels (its `in` axis).

    `bias(node)`: the unshared constant that adds one value per output channel after
    the node, and the factor a unit of the node's output becomes in it (or None).
    `contribution(node, values, axis, means)`: per output channel, what the removed
    input slices `values` (taken on `axis` of the weight) add on average for input
    means `means`; None when the layer has no such closed form.
    `refittable(node, weight)`: whether the weight's values can be refit by least
    squares (rows = every axis but the input one).
    `output_shift(node, weight, shift)`: the per-output-channel bias shift from a
    refit's shift per weight row (`weight` has its input axis last).
    """

    bias: Callable[[gs.Node], Carrier | None]
    contribution: Callable[[gs.Node, np.ndarray, int, np.ndarray], np.ndarray | None]
    refittable: Callable[[gs.Node, gs.Constant], bool]
    output_shift: Callable[[gs.Node, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SparseLayer:
    """How sparse kernels see a layer's weight (on the stored ONNX graph).

    `operands(attrs)`: (input index, grouped axis) of each operand that may be the
    weight. `shape_problem(shape)`: why an effective weight of this shape is not
    supported (None: it is). `outputs(shape, axis)`: rows of the matrix view.
    `input_rows(layer, value, seed)`: the layer's input as rows of the matrix view's
    columns. `unmeasurable(layer, gram)`: why its input cannot be measured.
    `input_key(layer)`: layers with equal keys read the same input matrix.
    `entry_sq(layer, value)`: Σx² per matrix entry and the row count, for layers
    measured without a Gram matrix that way (convolutions), or None.
    """

    operands: Callable[[dict], list[tuple[int, int]]]
    shape_problem: Callable[[tuple[int, ...]], str | None]
    outputs: Callable[[tuple[int, ...], int], int]
    input_rows: Callable[[Layer, np.ndarray, int], np.ndarray]
    unmeasurable: Callable[[Layer, bool], str | None]
    input_key: Callable[[Layer], tuple]
    entry_sq: Callable[[Layer, np.ndarray], tuple[np.ndarray, int]] | None = None


Values = np.ndarray
Params = Callable[[int], np.ndarray | None]  # a view op's constant input by index


@dataclass(frozen=True)
class WeightView:
    """An op that presents a stored weight to the op reading it.

    `keeps_axes`: every axis of the stored tensor is the same axis of the view, so the
    dependency graph sees the constant through it (a weight in float16 or int8); a
    Transpose moves axes and is seen through only by the sparsifier.
    `apply(values, attrs, params)` / `invert(values, attrs, params)`: the view's values,
    and the stored values for new view values (`params(i)`: the op's i-th input as
    stored); None where the sparsifier cannot write through the view.
    `dtype(stored, attrs)`: the ONNX element type of the view.
    `problem(attrs, inputs)`: why the sparsifier cannot write through this instance
    (`inputs`: the stored TensorProto of each named input, None when not stored).
    `dequantizes`: the view turns stored integers into floats.
    `zero(node, zeros)`: what stands for zero in the stored weight a view node reads,
    given stored zeros of its shape (a DequantizeLinear's zero point); None: zeros.
    """

    keeps_axes: bool
    apply: Callable[[Values, dict, Params], Values] | None = None
    invert: Callable[[Values, dict, Params], Values] | None = None
    dtype: Callable[[int, dict], int] = lambda stored, attrs: stored
    problem: Callable[[dict, list], str | None] = lambda attrs, inputs: None
    dequantizes: bool = False
    zero: Callable[[gs.Node, Values], Values] | None = None

    @property
    def writable(self) -> bool:
        """Whether the sparsifier can trace a weight through the view and write it back."""
        return self.apply is not None and self.invert is not None


@dataclass(frozen=True)
class OpFamily:
    """What the pipeline knows about a set of op types (see the module docstring)."""

    rule: Rule
    compute: bool = False
    macs: Callable[[gs.Node, ShapeOf], int] | None = None
    products: bool = False
    sink: Sink | None = None
    timed: Callable[[gs.Node], bool] | None = None
    sparse: SparseLayer | None = None
    view: WeightView | None = None


_FAMILIES: dict[str, OpFamily] = {}
_LOADED = False


def register(*op_types: str, rule: Rule, **hooks: Any) -> OpFamily:
    """Register the op types of one family; registering a type twice is an error."""
    family = OpFamily(rule, **hooks)
    for op in op_types:
        if op in _FAMILIES:
            raise ValueError(f"op type {op} is registered twice")
        _FAMILIES[op] = family
    return family


def key(op: str, domain: str | None = "") -> str:
    """The registry key of an op type in a domain."""
    return op if (domain or "") in ("", "ai.onnx") else f"{domain}::{op}"


def family_of(op: str, domain: str | None = "") -> OpFamily | None:
    """The family of an op type, or None when the op is not understood."""
    _load()
    return _FAMILIES.get(key(op, domain))


def family_for(node: gs.Node) -> OpFamily | None:
    """The family of a graph node's op, or None when the op is not understood."""
    return family_of(node.op, node.domain)


def families() -> dict[str, OpFamily]:
    """Every registered op type and its family."""
    _load()
    return dict(_FAMILIES)


def missing_hooks(registered: dict[str, OpFamily]) -> list[str]:
    """What each registration lacks that its family requires: a rule that defines
    `propagate`; `macs` for a compute op; compute for an op whose rule seeds groups
    from a weight (it multiplies by it) or that has layer hooks (sink, timing,
    sparsity, products)."""
    from .rule import Rule

    problems = []
    for op, family in sorted(registered.items()):
        rule = type(family.rule)
        if not issubclass(rule, Rule) or rule.propagate is Rule.propagate:
            problems.append(f"{op}: no channel rule")
        layer = family.sink or family.timed or family.sparse or family.products
        if (rule.seeds is not Rule.seeds or layer) and not family.compute:
            problems.append(f"{op}: a layer with a weight, not marked compute")
        if family.compute and family.macs is None:
            problems.append(f"{op}: a compute op without a cost (macs) hook")
    return problems


def is_axis_view(op: str) -> bool:
    """Whether an op type is a weight view the dependency graph sees through (a view
    that keeps every axis where it is), whatever the node's domain."""
    family = family_of(op)
    return family is not None and family.view is not None and family.view.keeps_axes


def _load() -> None:
    """Import every family module of the package (each registers its op types)."""
    global _LOADED
    if _LOADED:
        return
    package = importlib.import_module(__package__)
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        importlib.import_module(f"{__package__}.{module}")
    _LOADED = True
