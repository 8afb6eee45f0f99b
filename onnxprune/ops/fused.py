"""onnxruntime's fused transformer ops (com.microsoft), as written by
`onnxruntime.transformers.optimizer`.

- Attention: packed Q/K/V weights [hidden, q+k+v] and bias; a head owns one block
  in each of the three parts and one block of the output; `num_heads` (and
  `qkv_hidden_sizes`) are rewritten.
- MultiHeadAttention: separate 3-D query/key/value; blocks of each and of the output.
- GroupQueryAttention: a key/value head goes with the query heads that share it.
  The three attention ops cost their projections (packed Attention only) plus the
  scores and the context.
- SkipLayerNormalization, SkipSimplifiedLayerNormalization, EmbedLayerNormalization:
  the hidden axis, approximate (statistics change).
- BiasGelu, FastGelu, Gelu, QuickGelu, BiasAdd: element-wise with a bias on the last
  axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..depgraph.core import Edges, GraphView, Role, Slot
from .elementwise import Broadcasting
from .layer import elements
from .norm import link_normalized
from .registry import register
from .rule import Change, Rule

MS = "com.microsoft::"

register(*(MS + op for op in ("BiasGelu", "FastGelu", "Gelu", "QuickGelu", "BiasAdd")),
         rule=Broadcasting())


@dataclass
class Part:
    """`heads` blocks of `size` indices starting at `offset` on `slot`; head h maps to
    unit h // share (share > 1 for query heads sharing a key/value head)."""

    slot: Slot
    offset: int
    size: int
    heads: int
    role: Role
    share: int = 1


def link_heads(edges: Edges, parts: list[Part]) -> None:
    """Join every part's blocks to the unit they belong to; the first part anchors."""
    anchor = parts[0]
    for part in parts:
        local = np.arange(part.heads * part.size)
        unit = (local // part.size) // part.share
        edges.map(anchor.slot, part.slot, anchor.offset + unit * anchor.size,
                  part.offset + local, part.role)
        edges.tag(part.slot, "split")
        edges.tag(part.slot, "attention")


def _names(node: gs.Node, count: int) -> list[str]:
    return [node.inputs[i].name if i < len(node.inputs) else "" for i in range(count)]


def _uses_cache(node: gs.Node, view: GraphView, first_output: int = 1) -> bool:
    """Whether a key/value cache output is read or is a graph output."""
    return any(t.outputs or t.name in view.output_names for t in node.outputs[first_output:])


class _HeadRule(Rule):
    """Shared propagate: head parts, plus the pass-through of other axes."""

    def parts(self, node: gs.Node, view: GraphView) -> list[Part] | str:
        raise NotImplementedError

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        parts = self.parts(node, view)
        if isinstance(parts, str):
            edges.block(slot, f"{node.op} {node.name}: {parts}")
            return
        if any(p.slot == slot for p in parts):
            link_heads(edges, parts)
            return
        if not self.other(node, slot, view, edges):
            edges.block(slot, f"{node.op} {node.name}: axis {slot.axis} of {slot.tensor} "
                              "is not a channel axis of this op")

    def other(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> bool:
        return False

    def kept_units(self, node: gs.Node, change: Change) -> int | None:
        """Units left after a rewrite, counted on the anchor part."""
        parts = self.parts(node, change.view)
        if isinstance(parts, str):
            return None
        kept = change.kept(parts[0].slot.tensor, parts[0].slot.axis)
        return None if kept is None else kept // parts[0].size


class Attention(_HeadRule):
    """input [B, S, hidden] · weights [hidden, q + k + v] + bias → output [B, S, v]."""

    def seeds(self, node: gs.Node, view: GraphView) -> list[Slot]:
        return [Slot(node.inputs[1].name, 1)] if view.is_weight(node.inputs[1].name) else []

    def _sizes(self, node: gs.Node, view: GraphView) -> list[int] | None:
        if "qkv_hidden_sizes" in node.attrs:
            return [int(s) for s in node.attrs["qkv_hidden_sizes"]]
        total = view.dim(Slot(node.inputs[1].name, 1))
        return None if total is None or total % 3 else [total // 3] * 3

    def parts(self, node: gs.Node, view: GraphView) -> list[Part] | str:
        x, w, b = _names(node, 3)
        sizes, heads = self._sizes(node, view), int(node.attrs["num_heads"])
        if sizes is None or any(s % heads for s in sizes):
            return "packed weight sizes unknown"
        if _uses_cache(node, view) or any(_names(node, 6)[4:]):
            return "key/value cache inputs or outputs are used"
        y = node.outputs[0].name
        parts = [Part(Slot(y, 2), 0, sizes[2] // heads, heads, Role.ACT)]
        offsets = np.cumsum([0] + sizes[:2]).tolist()
        for offset, size in zip(offsets, sizes, strict=True):
            parts.append(Part(Slot(w, 1), offset, size // heads, heads, Role.OUT))
            if b:
                parts.append(Part(Slot(b, 0), offset, size // heads, heads, Role.PARAM))
        return parts

    def other(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> bool:
        x, w = node.inputs[0].name, node.inputs[1].name
        if slot in (Slot(x, 2), Slot(w, 0)):
            edges.same(slot, Slot(w, 0) if slot.tensor == x else Slot(x, 2),
                       Role.IN if slot.tensor == x else Role.ACT)
            return True
        return False

    def rewrite(self, node: gs.Node, change: Change) -> None:
        heads = int(node.attrs["num_heads"])
        sizes = self._sizes(node, change.view)
        y = node.outputs[0].name
        kept = change.kept(y, 2)
        if sizes is None or kept is None or kept == change.view.dim(Slot(y, 2)):
            return
        new_heads = kept // (sizes[2] // heads)
        node.attrs["num_heads"] = new_heads
        if "qkv_hidden_sizes" in node.attrs:
            node.attrs["qkv_hidden_sizes"] = [s // heads * new_heads for s in sizes]


class MultiHeadAttention(_HeadRule):
    """query, key, value [B, S, heads·size] (+ packed bias) → output [B, S, heads·v]."""

    def parts(self, node: gs.Node, view: GraphView) -> list[Part] | str:
        q, k, v, b = _names(node, 4)
        heads = int(node.attrs["num_heads"])
        if not k or not v or any(view.rank(n) != 3 for n in (q, k, v)):
            return "only separate 3-D query, key and value are supported"
        if _uses_cache(node, view) or any(_names(node, 8)[6:]):
            return "key/value cache inputs or outputs are used"
        dims = [view.dim(Slot(n, 2)) for n in (q, k, v)]
        if None in dims or any(d % heads for d in dims):
            return "head sizes unknown"
        y = node.outputs[0].name
        parts = [Part(Slot(y, 2), 0, dims[2] // heads, heads, Role.ACT)]
        parts += [Part(Slot(n, 2), 0, d // heads, heads, Role.ACT)
                  for n, d in zip((q, k, v), dims, strict=True)]
        if b:
            offsets = np.cumsum([0] + dims[:2]).tolist()
            parts += [Part(Slot(b, 0), o, d // heads, heads, Role.PARAM)
                      for o, d in zip(offsets, dims, strict=True)]
        return parts

    def rewrite(self, node: gs.Node, change: Change) -> None:
        heads = self.kept_units(node, change)
        if heads is not None:
            node.attrs["num_heads"] = heads


class GroupQueryAttention(_HeadRule):
    """A key/value head and the num_heads / kv_num_heads query heads that share it."""

    def parts(self, node: gs.Node, view: GraphView) -> list[Part] | str:
        q, k, v, past_k, past_v = _names(node, 5)
        heads, kv_heads = int(node.attrs["num_heads"]), int(node.attrs["kv_num_heads"])
        if not k or not v or any(view.rank(n) != 3 for n in (q, k, v)):
            return "only separate 3-D query, key and value are supported"
        if past_k or past_v or _uses_cache(node, view):
            return "key/value cache inputs or outputs are used"
        dims = [view.dim(Slot(n, 2)) for n in (q, k, v)]
        if None in dims or dims[0] % heads or dims[1] % kv_heads or heads % kv_heads:
            return "head sizes unknown"
        share, size = heads // kv_heads, dims[1] // kv_heads
        y = node.outputs[0].name
        return [Part(Slot(k, 2), 0, size, kv_heads, Role.ACT),
                Part(Slot(v, 2), 0, dims[2] // kv_heads, kv_heads, Role.ACT),
                Part(Slot(q, 2), 0, dims[0] // heads, heads, Role.ACT, share),
                Part(Slot(y, 2), 0, dims[0] // heads, heads, Role.ACT, share)]

    def rewrite(self, node: gs.Node, change: Change) -> None:
        kv_heads = self.kept_units(node, change)
        if kv_heads is not None:
            share = int(node.attrs["num_heads"]) // int(node.attrs["kv_num_heads"])
            node.attrs["kv_num_heads"] = kv_heads
            node.attrs["num_heads"] = kv_heads * share


class SkipLayerNorm(Rule):
    """input + skip (+ bias), normalized over the last axis; the sum may be an output."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        x = node.inputs[0].name
        rank = view.rank(x)
        stats = [t.name for t in node.outputs[1:3] if t.name]
        if rank is None or slot.tensor in stats or any(view.tensors[n].outputs for n in stats):
            edges.block(slot, f"{node.op} {node.name}: statistics outputs are used")
            return
        data = [x, node.inputs[1].name, node.outputs[0].name]
        data += [t.name for t in node.outputs[3:4] if t.name]
        axis = slot.axis if slot.tensor in data else rank - 1
        link_normalized(node, slot, axis, rank - 1, data, view, edges)


class EmbedLayerNorm(Rule):
    """Word, position and segment tables share the hidden axis with gamma, beta and the
    output; ids and masks carry no channels."""

    def propagate(self, node: gs.Node, slot: Slot, view: GraphView, edges: Edges) -> None:
        tables = [t.name for t in node.inputs[2:5] if t.name]
        params = [t.name for t in node.inputs[5:7] if t.name]
        outputs = [node.outputs[0].name] + [t.name for t in node.outputs[2:3] if t.name]
        members = [Slot(n, 1) for n in tables] + [Slot(n, 0) for n in params] + [
            Slot(n, 2) for n in outputs]
        if slot not in members:
            edges.block(slot, f"{node.op} {node.name}: not the hidden axis")
            return
        edges.mix(slot, f"{node.op} {node.name} normalizes over this axis")
        for other in members:
            if other != slot:
                role = Role.ACT if other.tensor in outputs else Role.PARAM
                edges.same(slot, other, role)


def _attention_macs(node: gs.Node, shape_of) -> int:
    """Projections (packed Attention only) plus scores and context: per query position,
    every key position costs one query-sized and one value-sized dot product."""
    x, y = shape_of(node.inputs[0].name), shape_of(node.outputs[0].name)
    if not x or not y:
        return 0
    batch, queries = x[0], x[1]
    if node.op == "Attention":
        w = shape_of(node.inputs[1].name)
        projections = batch * queries * elements(w) if w else 0
        q_size = (w[1] - y[2]) // 2 if w else y[2]
        return projections + batch * queries * queries * (q_size + y[2])
    key = shape_of(node.inputs[1].name) if len(node.inputs) > 1 and node.inputs[1].name else x
    keys = key[1] if key else queries
    return batch * queries * keys * (x[2] + y[2])


register(MS + "Attention", rule=Attention(), compute=True, macs=_attention_macs)
register(MS + "MultiHeadAttention", rule=MultiHeadAttention(), compute=True,
         macs=_attention_macs)
register(MS + "GroupQueryAttention", rule=GroupQueryAttention(), compute=True,
         macs=_attention_macs)
register(MS + "SkipLayerNormalization", MS + "SkipSimplifiedLayerNormalization",
         rule=SkipLayerNorm())
register(MS + "EmbedLayerNormalization", rule=EmbedLayerNorm())
