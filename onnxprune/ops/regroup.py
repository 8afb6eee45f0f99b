"""Following an axis through a Reshape or Flatten, which regroup axes without moving
elements.

Input and output shapes are aligned into runs of axes with equal products. Inside a
run each axis covers a range of strides; an axis whose range lies inside another
axis's range is one of its factors. Index u of the bigger axis then has coordinate
(u // stride) % size on the factor:

- a merge of [C, H, W] into one axis maps channel c to the block c·H·W … (c+1)·H·W − 1;
- a merge of [S, C] (C the inner factor) maps channel c to every index s·C + c, a
  strided map ("interleaved"), as in flattening layers of TensorFlow and JAX exports;
- a split of one axis into [H, D] maps index i to i // D on H (attention heads).

Several factors share one bigger axis, and only one of them may carry its units:
for a split, the outermost factor that is neither a selector (the q/k/v axis of a
fused projection) nor merged again as an inner factor (the group axis of a channel
shuffle); for a merge, the outermost factor that carries channels, which the
propagation knows only when it has reached everything (a `Choice`). An axis that
straddles axes of the other side is blocked.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Choice, Edges, GraphView, Role, Slot
from .align import align
from .axes import is_selector, remerged_inner
from .transpose import permutes_within

Span = tuple[int, int]
# Transposes among split factors before they are merged again (a channel shuffle has one).
SHUFFLE_TRANSPOSES = 4


def link_regrouped(node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
    """Couple a slot across an op whose input and output hold the same elements."""
    x, y = node.inputs[0].name, node.outputs[0].name
    if slot.tensor not in (x, y):
        edges.block(slot, f"{node.op} {node.name}: shape input is not data")
        return
    here, there = (x, y) if slot.tensor == x else (y, x)
    here_shape, there_shape = view.shape(here), view.shape(there)
    if here_shape is None or there_shape is None:
        edges.block(slot, f"{node.op} {node.name}: shapes unknown")
        return
    match = _aligned(slot.axis, here_shape, there_shape)
    if not match:  # heads folded into the batch (N·H): align at batch 1
        here_shape, there_shape = view.batch_one_shape(here), view.batch_one_shape(there)
        match = _aligned(slot.axis, here_shape, there_shape)
    if not match:
        edges.block(slot, f"{node.op} {node.name}: cannot follow axis {slot.axis} through "
                          f"{list(here_shape)} -> {list(there_shape)}")
        return
    runs = {here: _run_axes(match[0][0], here_shape), there: _run_axes(match[0][1], there_shape)}
    _link_run(_Run(node, view, x, y, runs, {here: here_shape, there: there_shape}), slot,
              edges)


def _aligned(axis: int, here_shape, there_shape) -> list:
    return [(gh, gt) for gh, gt in align(here_shape, there_shape) if axis in gh]


def _run_axes(axes: list[int], shape) -> list[int]:
    return [k for k in axes if shape[k] != 1]


class _Run:
    """One aligned run of a regrouping node: its axes of size > 1 on both sides."""

    def __init__(self, node: gs.Node, view: GraphView, x: str, y: str,
                 axes: dict[str, list[int]], shapes: dict[str, tuple]):
        self.node, self.view, self.x, self.y = node, view, x, y
        self.axes, self.shapes = axes, shapes

    def other(self, tensor: str) -> str:
        return self.y if tensor == self.x else self.x

    def size(self, slot: Slot) -> int:
        return int(self.shapes[slot.tensor][slot.axis])

    def spans(self, tensor: str) -> dict[int, Span] | None:
        """Stride range [lo, hi) of each axis (None when a size is not static)."""
        shape, spans, lo = self.shapes[tensor], {}, 1
        for k in reversed(self.axes[tensor]):
            if not isinstance(shape[k], int):
                return None
            spans[k] = (lo, lo * int(shape[k]))
            lo *= int(shape[k])
        return spans

    def what(self) -> str:
        return f"{self.node.op} {self.node.name}"


def _inside(inner: Span, outer: Span) -> bool:
    """Whether an axis with stride range `inner` is a factor of one with `outer`."""
    return outer[0] <= inner[0] and inner[1] <= outer[1] and inner[0] % outer[0] == 0 \
        and outer[1] % inner[1] == 0


def _link_run(run: _Run, slot: Slot, edges: Edges) -> None:
    here, there = slot.tensor, run.other(slot.tensor)
    mine, theirs = run.axes[here], run.axes[there]
    if slot.span > 1:
        _link_span(run, slot, edges)
        return
    if len(mine) == 1 and len(theirs) == 1 and mine == [slot.axis]:
        edges.same(slot, Slot(there, theirs[0]), Role.ACT)
        return
    my_spans, their_spans = run.spans(here), run.spans(there)
    if slot.axis not in mine or my_spans is None or their_spans is None:
        why = "has size 1" if slot.axis not in mine else "is regrouped with run-time sizes"
        edges.block(slot, f"{run.what()}: axis {slot.axis} {why}")
        return
    span = my_spans[slot.axis]
    around = [t for t in theirs if _inside(span, their_spans[t])]
    if around and their_spans[around[0]] == span:
        edges.same(slot, Slot(there, around[0]), Role.ACT)
        return
    if around:
        big = Slot(there, around[0])
        factors = [Slot(here, k) for k in mine if _inside(my_spans[k], their_spans[big.axis])]
        _decide(run, big, factors, slot, edges)
        return
    inside = [Slot(there, t) for t in theirs if _inside(their_spans[t], span)]
    if inside:  # other axes may straddle my bounds: they cannot carry my units
        _decide(run, slot, inside, slot, edges)
        return
    edges.block(slot, f"{run.what()}: axis {slot.axis} straddles axes of "
                      f"{list(run.shapes[there])} (regrouped with another factorization)")


def _link_span(run: _Run, slot: Slot, edges: Edges) -> None:
    """Axes taken as one go with the one axis of the other side that they make up."""
    here, there = slot.tensor, run.other(slot.tensor)
    inside = range(slot.axis, slot.axis + slot.span)
    my_spans, their_spans = run.spans(here), run.spans(there)
    covered = [k for k in run.axes[here] if k in inside]
    whole = my_spans is not None and their_spans is not None and covered and all(
        k in run.axes[here] or run.shapes[here][k] == 1 for k in inside)
    span = (my_spans[covered[-1]][0], my_spans[covered[0]][1]) if whole else None
    same = [t for t in run.axes[there] if whole and their_spans[t] == span]
    if not same:
        edges.block(slot, f"{run.what()}: axes {slot} do not make up one axis of "
                          f"{list(run.shapes[there])}")
        return
    edges.same(slot, Slot(there, same[0]), Role.ACT)


def _decide(run: _Run, big: Slot, factors: list[Slot], slot: Slot, edges: Edges) -> None:
    """Link `slot` (the big axis or one of its factors) as the carrier rule says."""
    whole = _whole(run, factors)
    if big.tensor == run.x and whole is not None:  # split, then merged again as a whole
        if slot == big:
            edges.same(big, whole, Role.ACT)
        else:
            edges.block(slot, f"{run.what()}: axis {slot.axis} is one factor of split axis "
                              f"{big.axis}, which is followed as a whole")
        return
    if big.tensor == run.x:  # a split: the carrier is known from the graph's shape
        carrier = _split_carrier(run, factors)
        if carrier is None or slot not in (big, carrier):
            edges.block(slot, f"{run.what()}: axis {slot.axis} is a factor of split axis "
                              f"{big.axis} that does not carry its units")
            return
        edges.merge(_factor_edges(run, big, carrier, "split"))
        return
    options = [f for f in factors if not is_selector(f.tensor, f.axis, run.view)]
    choices = [(f, _factor_edges(run, big, f, "interleaved")) for f in options]
    if whole is not None:
        choices.insert(0, (whole, Edges()))
        choices[0][1].same(whole, big, Role.ACT)
    if slot != big and slot not in options:
        edges.block(slot, f"{run.what()}: axis {slot.axis} selects parts of merged axis "
                          f"{big.axis}")
    elif options and slot == options[0] and whole is None:
        edges.merge(choices[0][1])
    elif choices:
        edges.choices.append(Choice(
            (run.node.name, big), choices,
            f"{run.what()}: axis merged into axis {big.axis} of {big.tensor} as an inner "
            "factor of an axis that carries other channels"))


def _whole(run: _Run, factors: list[Slot]) -> Slot | None:
    """The factors as one slot, when a Reshape splits them off one axis and, after
    Transposes among them, another merges them into one axis (a permutation)."""
    if len(factors) < 2:
        return None
    slot = Slot(factors[0].tensor, factors[0].axis, factors[-1].axis - factors[0].axis + 1)
    return slot if regrouped_whole(slot, run.view) else None


def regrouped_whole(slot: Slot, view: GraphView) -> bool:
    """Whether the axes of `slot` come from one axis split by a Reshape (or Flatten)
    and go, moved only among themselves by Transposes, into one axis of another."""
    return _chain_end(slot, view, forward=False) and _chain_end(slot, view, forward=True)


def _chain_end(slot: Slot, view: GraphView, forward: bool, depth: int = SHUFFLE_TRANSPOSES
               ) -> bool:
    tensor = view.tensors.get(slot.tensor)
    if tensor is None or len(tensor.outputs) != 1 or depth == 0:
        return False
    nodes = tensor.outputs if forward else tensor.inputs
    node = nodes[0] if len(nodes) == 1 else None
    if node is None or forward and node.inputs[0].name != slot.tensor:
        return False
    other = node.outputs[0].name if forward else node.inputs[0].name
    if node.op == "Transpose" and permutes_within(node, slot, view):
        return _chain_end(Slot(other, slot.axis, slot.span), view, forward, depth - 1)
    if node.op not in ("Reshape", "Flatten"):
        return False
    shape, other_shape = view.shape(slot.tensor), view.shape(other)
    if shape is None or other_shape is None:
        return False
    inside = {k for k in range(slot.axis, slot.axis + slot.span) if shape[k] != 1}
    for mine, theirs in align(shape, other_shape):
        if inside & set(mine):
            return {k for k in mine if shape[k] != 1} == inside and \
                len([k for k in theirs if other_shape[k] != 1]) == 1
    return False


def _split_carrier(run: _Run, factors: list[Slot]) -> Slot | None:
    candidates = [f for f in factors if not is_selector(f.tensor, f.axis, run.view)]
    preferred = [f for f in candidates if not remerged_inner(f.tensor, f.axis, run.view)]
    return (preferred or candidates or [None])[0]


def _factor_edges(run: _Run, big: Slot, factor: Slot, kind: str) -> Edges:
    """Index u of the big axis goes with coordinate (u // stride) % size of the factor.
    `kind` tags the factor of a split ("split") or the merged axis when the factor is
    not its outermost part ("interleaved")."""
    big_span = run.spans(big.tensor)[big.axis]
    factor_span = run.spans(factor.tensor)[factor.axis]
    u = np.arange(run.size(big))
    coordinate = (u // (factor_span[0] // big_span[0])) % run.size(factor)
    edges = Edges()
    edges.map(big, factor, u, coordinate, Role.ACT)
    edges.roles.setdefault(big, Role.ACT)
    if kind == "split":
        edges.tag(factor, "split")
    elif factor_span[1] < big_span[1]:
        edges.tag(big, "interleaved")
    return edges
