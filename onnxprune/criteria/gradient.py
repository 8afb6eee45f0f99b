"""Gradient criteria (the `train` extra): scores from gradients of the loss that
`train/saliency.py` defines, taken through the JAX translation of the model after it
is checked against onnxruntime on the first calibration batch.

Each unit u of a group gets a mask m_u = 1 multiplying its channels on every edge into
the layers that absorb the group (the activation read by each consumer, exactly what
removing the unit zeroes); g_{s,u} = ∂ℓ_s/∂m_u for each calibration sample s.

- `fisher`: Σ_s g_{s,u}², the diagonal empirical Fisher information of the unit's mask
  (Kwon et al. 2022): the expected loss increase of removing it, to second order, in
  the same units for every group, so `--global` compares them directly.
- `taylor`: Σ_s |g_{s,u}|, the first-order Taylor estimate of each sample's loss change
  when the unit is removed, in absolute value so that opposite signs do not cancel
  (Molchanov et al. 2017).
- `snip`: Σ over the unit's weights (producer filters and consumer input slices) of
  |w · ∂L/∂w|, L = Σ_s ℓ_s (connection sensitivity, Lee et al. 2019).

A group with no edge into an absorbing layer falls back to `l2`. With `labels` in the
calibration data the loss is the supervised cross-entropy (`train/saliency.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..depgraph import GraphView, Group, Role, Slot
from ..train import check_translation
from ..train.saliency import MaskTap, edge_gradients, mask_gradients, per_sample, readers
from .activation import _consumers
from .magnitude import _atom_reduce, _per_unit, _weight_slots, l2

if TYPE_CHECKING:
    from ..analysis import Analysis
    from ..train.translate import Translated

MASKED = ("fisher", "taylor")


def sink_edges(group: Group, view: GraphView) -> list[tuple[tuple[str, str], Slot]]:
    """(edge, activation slot) for each activation the group's absorbing layers read."""
    acts = {s.tensor: s for s in group.members if group.roles.get(s) == Role.ACT}
    edges = {}
    for slot in group.slots(Role.IN):
        for node in _consumers(view, slot.tensor):
            for tensor in node.inputs:
                if tensor.name in acts and node.outputs:
                    edges[(node.outputs[0].name, tensor.name)] = acts[tensor.name]
    return sorted(edges.items(), key=lambda item: item[0])


def mask_taps(groups: list[Group], view: GraphView) -> tuple[list[MaskTap], dict[int, int]]:
    """Mask taps for every group's units, laid out one group after another in one
    vector, and each group's offset in it (groups without an edge have none)."""
    taps, offsets, offset = [], {}, 0
    for group in groups:
        edges = sink_edges(group, view)
        if not edges:
            continue
        offsets[group.id] = offset
        for edge, slot in edges:
            units = group.members[slot]
            taps.append(MaskTap(edge, slot.axis, slot.span,
                                np.where(units >= 0, units + offset, -1)))
        offset += group.units
    return taps, offsets


def _checked(analysis: Analysis) -> Translated:
    """The translation, checked against onnxruntime on the first calibration batch."""
    first = next(iter(analysis.stream()))
    return check_translation(analysis.proto, first)[0]


def mask_scores(name: str, groups: list[Group], analysis: Analysis, seed: int
                ) -> dict[int, np.ndarray]:
    """`fisher` or `taylor` scores of each group's units."""
    view = analysis.dep.view
    taps, offsets = mask_taps(groups, view)
    total = sum(g.units for g in groups if g.id in offsets)
    summed = np.zeros(total)
    if taps:
        translated = _checked(analysis)
        for grads in mask_gradients(translated, analysis.stream(), taps, total, seed,
                                    per_sample(analysis.proto), analysis.labels()):
            summed += (grads ** 2 if name == "fisher" else np.abs(grads)).sum(axis=0)
    return {g.id: summed[offsets[g.id]:offsets[g.id] + g.units] if g.id in offsets
            else l2(g, view, None) for g in groups}


def snip_scores(groups: list[Group], analysis: Analysis, seed: int) -> dict[int, np.ndarray]:
    """`snip` scores of each group's units."""
    view = analysis.dep.view
    tensors = sorted({s.tensor for g in groups for s in _weight_slots(g, view)})
    grads: dict[str, np.ndarray] = {}
    if tensors:
        translated = _checked(analysis)
        edges = {edge: view.const(name).shape for name in tensors
                 for edge in readers(translated, name)}
        for (_, name), grad in edge_gradients(translated, analysis.stream(), edges, seed,
                                              per_sample(analysis.proto),
                                              analysis.labels()).items():
            grads[name] = grads.get(name, 0) + grad
    scores = {}
    for group in groups:
        rows = [_per_unit(group, s, _atom_reduce(view.const(s.tensor) * grads[s.tensor],
                                                 s.axis, 1))
                for s in _weight_slots(group, view) if s.tensor in grads]
        scores[group.id] = np.sum(rows, axis=0) if rows else l2(group, view, None)
    return scores


def evidence(name: str, groups: list[Group], analysis: Analysis, seed: int
             ) -> dict[int, np.ndarray]:
    """The scores of criterion `name` for every group, from one gradient pass."""
    if name in MASKED:
        return mask_scores(name, groups, analysis, seed)
    return snip_scores(groups, analysis, seed)
