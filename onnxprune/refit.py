"""Layer-by-layer least-squares refit of the layers that absorb channel groups.

Each consumer that its op family says can be refit (the `sink` hook in `ops/`: Conv,
ConvTranspose, Gemm, MatMul, Einsum) keeps its output close to the dense
model's: with x the activations entering it in the model pruned so far (earlier
layers already pruned and refit) and x_d those of the dense model, its kept weights
W' and a bias shift δ minimize ‖W'·x + δ − W·x_d‖² + λ‖W' − W‖² over the
calibration data (the channel-pruning reconstruction of He et al. 2017, in the
closed form of Kwon et al. 2022). With `ridge="auto"` one in four of the
calibration batches (1, 5, 9, …) is also held out: each layer solves with its
statistics minus the held-out ones for every ridge of `RIDGES`, keeps the ridge whose
solution best predicts the dense outputs of the held-out batches, and solves again with
it on all batches. Given a *teacher* (the dense model a round of
`--rounds` is fit to, while the model it cuts was already cut and refit), W and x_d
are the teacher's, the damping pulls toward the weights as they are, and the bias
shift is added to the teacher's bias. Layers are visited level by level on the layer-wise
walk (`layerwise.py`), so errors do not compound; the result is new constant values,
which the rewrite applies. A k×k convolution is fit per kernel position on the channel
statistics (each tap's weights map channels to outputs), which keeps the systems at
channel size whatever the kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from .depgraph import DepGraph, GraphView, Slot
from .distributed import Executor, InProcess
from .external import dtype_of, has_external, kept_aside, peek
from .layerwise import changed_prefixes, levels, solve_level, teacher_prefixes, walk
from .memory import level_check, shape_need
from .model import export
from .moments import Moments
from .ops import family_for
from .reconstruct import add_to_bias, bias_of, sinks
from .rewrite import Values, zeroed_sinks
from .threads import fixed_blas

if TYPE_CHECKING:
    from .calibrate import Feeds

# The dense model a refit is fit to when it is not the one cut: its graph view and model.
Teacher = tuple[GraphView, ModelProto]


@dataclass
class Layer:
    """A consumer to refit: its node, weight and input slots, and kept input channels
    (its weights are read when its level is solved)."""

    node: gs.Node
    weight: Slot
    act: Slot
    kept: np.ndarray


Ridge = float | str  # a damping >= 0, or "auto": chosen per layer on held-out batches
RIDGES = (1e-3, 1e-2, 0.1, 1.0, 10.0)  # the dampings "auto" chooses from
DEFAULT_RIDGE = 0.1  # "auto" with a single calibration batch (nothing to hold out)
HOLD_EVERY = 4  # "auto" holds out batch numbers 1, 5, 9, …


def refit_layerwise(dep: DepGraph, removed_units: dict[int, np.ndarray], original: ModelProto,
                    stream: Callable[[], Iterator[Feeds]], ridge: Ridge = DEFAULT_RIDGE,
                    progress: Callable[[int], None] | None = None,
                    executor: Executor | None = None, teacher: Teacher | None = None,
                    max_memory: int | None = None) -> tuple[Values, int, int, list[float]]:
    """Refit every consumer of an exact group. Returns the new constant values by name
    (removed channels zeroed; the analyzed graph is left as it is), the layers refit,
    the layers left as they were and the ridge each refit layer was solved with. The
    solves of a level run as tasks of `executor` (in-process by default). `teacher`:
    the dense model to fit to (its graph view and model; same tensor names), when it is
    not `original`. A layer's weights are read when its level is solved; new values of
    a model with external data are kept in the scratch file. `max_memory`: bytes a
    level may hold (its statistics and its dense inputs), else `InputError`."""
    dense = teacher[0] if teacher else dep.view
    layers = _layers(dep, removed_units)
    layer_levels = _levels(dep.view.graph, layers)
    walked = {layer.weight.tensor for level in layer_levels for layer in level}
    values = _zero_removed(dep, removed_units, lambda name: name not in walked)
    spilling, chosen = has_external(original), []

    def update(level: list[Layer], stats: dict[int, Moments]) -> None:
        solved = solve_level(executor or InProcess(), _solve_task, level, stats,
                             lambda layer: _task_of(layer, dep.view, dense), ridge)
        for layer, (result, damping) in zip(level, solved, strict=True):
            new = _refitted(dep, layer, result, values, teacher[0] if teacher else None)
            chosen.extend([damping] if new else [])
            new = new or _zero_removed(dep, removed_units, {layer.weight.tensor}.__contains__)
            values.update({name: kept_aside(v, name, spilling) for name, v in new.items()})

    current = export(dep.view.graph, original)
    prefixes = changed_prefixes(current, values) if teacher is None else \
        teacher_prefixes(current, export(teacher[0].graph, teacher[1]), values)
    walk(layer_levels, stream, prefixes, lambda layer: layer.act.tensor, _input_key,
         _adder(ridge == "auto"), update, progress, level_check(
             [[shape_need(layer.node.name, dep.view.tensors[layer.weight.tensor].shape,
                          layer.weight.axis, "lsq") for layer in level]
              for level in layer_levels], max_memory, "least-squares refit"))
    return values, len(chosen), len(layers) - len(chosen), chosen


def _layers(dep: DepGraph, removed_units: dict[int, np.ndarray]) -> list[Layer]:
    """Consumers of every exact group whose weight can be refit directly: those of
    pruned groups lose inputs, the others see drifted inputs from pruned layers above."""
    layers = []
    for group in dep.groups:
        if group.approximate or group.blocked:
            continue
        units = removed_units.get(group.id, np.zeros(0, np.int64))
        for node, weight, act in sinks(group, dep):
            if _refittable(node, weight, dep.view):
                layers.append(Layer(node, weight, act, ~np.isin(group.members[act], units)))
    return layers


def _refittable(node: gs.Node, weight: Slot, view) -> bool:
    """A float constant only this layer reads, that its family can refit."""
    tensor = view.tensors.get(weight.tensor)
    if not isinstance(tensor, gs.Constant) or len(tensor.outputs) != 1 or \
            not np.issubdtype(dtype_of(tensor), np.floating):
        return False
    return family_for(node).sink.refittable(node, tensor)


def _zero_removed(dep: DepGraph, removed_units: dict[int, np.ndarray],
                  only: Callable[[str], bool]) -> Values:
    """The consumer weights (of the names `only` takes) that change when the removed
    units are zeroed there (they are sliced away later)."""
    return {name: value for name, value in
            zeroed_sinks(dep, removed_units, only=only).items()
            if not np.array_equal(peek(dep.view.tensors[name]), value)}


def _levels(graph: gs.Graph, layers: list[Layer]) -> list[list[Layer]]:
    """The layers in levels, in graph order (one layer per node: the last found)."""
    by_node = {id(layer.node): layer for layer in layers}
    nodes = [([t.name for t in node.inputs], [t.name for t in node.outputs],
              id(node) in by_node) for node in graph.nodes]
    ordered = [by_node[id(node)] for node in graph.nodes if id(node) in by_node]
    return levels(nodes, ordered, lambda layer: [t.name for t in layer.node.inputs])


def _input_key(layer: Layer) -> tuple:
    """Layers that read the same input and keep the same channels (as Q, K and V do)
    share their moments."""
    return layer.act.tensor, layer.act.axis, np.asarray(layer.kept, bool).tobytes()


def _adder(hold_out: bool) -> Callable[[Moments, Layer, dict, dict | None, int], None]:
    """What each batch adds: E[x̃ x̃ᵀ] and E[x̃ x_dᵀ], with x̃ the kept channels of x and
    a trailing 1; with `hold_out`, held-out batches also to `moments.held_out`."""

    def add(moments: Moments, layer: Layer, current: dict, dense: dict | None,
            number: int) -> None:
        tensor, axis = layer.act.tensor, layer.act.axis
        rows = _rows(current[tensor], axis)
        features = np.hstack([rows[:, layer.kept], np.ones((len(rows), 1), rows.dtype)])
        dense_rows = _rows(dense[tensor], axis)
        moments.add_rows(features, True, dense_rows, dense_first=True)
        if hold_out and number % HOLD_EVERY == 1:
            moments.held_out = moments.held_out or Moments()
            moments.held_out.add_rows(features, True, dense_rows, dense_first=True)

    return add


def _rows(value: np.ndarray, axis: int) -> np.ndarray:
    """Channels last, every other axis flattened into rows (float32)."""
    moved = np.moveaxis(np.asarray(value, np.float32), axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _task_of(layer: Layer, view: GraphView, dense: GraphView
             ) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
    """What a layer's solve needs of it, read now (float64): its dense weight (from the
    `dense` view) as rows (input channels last), its kept channels, whether it has a
    bias for the shift, and the rows its damping pulls toward (its weight in `view`)."""
    rows = _weight_rows(dense, layer)
    prior = rows if dense is view else _weight_rows(view, layer)
    return rows, layer.kept, bias_of(layer.node) is not None, prior


def _weight_rows(view: GraphView, layer: Layer) -> np.ndarray:
    """A layer's weight in `view` as float64 rows, input channels last."""
    weight = np.moveaxis(np.array(peek(view.tensors[layer.weight.tensor]), np.float64),
                         layer.weight.axis, -1)
    return weight.reshape(-1, weight.shape[-1])


def _solve_task(ridge: Ridge, moments: Moments, task: tuple) -> tuple[tuple | None, float]:
    """One layer's least-squares solve (a task of the level), and the ridge it used."""
    rows, kept, with_bias, prior = task
    with fixed_blas():
        damping = _chosen_ridge(task, moments) if ridge == "auto" else ridge
        return _solve(rows, moments, kept, float(damping), with_bias, prior), float(damping)


def _chosen_ridge(task: tuple, moments: Moments) -> float:
    """The ridge of `RIDGES` whose solution, fit without the held-out batches, has the
    least error on them (`DEFAULT_RIDGE` when nothing was held out)."""
    held = moments.held_out
    if held is None or held.count >= moments.count:
        return DEFAULT_RIDGE
    fitting = Moments(count=moments.count - held.count, gram=moments.gram - held.gram,
                      cross=moments.cross - held.cross)
    rows, kept, with_bias, prior = task
    errors = [_held_out_error(_solve(rows, fitting, kept, ridge, with_bias, prior), rows,
                              held) for ridge in RIDGES]
    return RIDGES[int(np.argmin(errors))]


def _held_out_error(solved, rows: np.ndarray, held: Moments) -> float:
    """E‖Θx̃ − W x_d‖² on the held-out rows, up to a constant (inf: no solution)."""
    if solved is None:
        return np.inf
    fitted, shift = solved
    theta = fitted if shift is None else np.hstack([fitted, shift[:, None]])
    size = theta.shape[1]
    gram = held.gram[:size, :size] / held.count
    target = rows @ (held.cross[:size].T / held.count)
    return float(np.sum((theta @ gram) * theta) - 2 * np.sum(theta * target))


def _refitted(dep: DepGraph, layer: Layer, solved: tuple | None, values: Values,
              teacher: GraphView | None = None) -> Values:
    """The layer's solved kept weights and bias shift over the new `values` so far (or
    the `teacher`'s bias): the constants changed (none when the fit failed or the shift
    has no bias to go to)."""
    tensor = dep.view.tensors[layer.weight.tensor]
    shape = (teacher or dep.view).tensors[layer.weight.tensor].shape  # the dense weight's
    weight = np.moveaxis(np.broadcast_to(np.float64(0), shape), layer.weight.axis, -1)
    carrier = bias_of(layer.node)
    if solved is None:
        return {}
    fitted, shift = solved
    dtype = values[tensor.name].dtype if tensor.name in values else dtype_of(tensor)
    new = np.zeros((int(np.prod(weight.shape[:-1])), weight.shape[-1]), dtype)
    new[:, layer.kept] = fitted  # in the weight's dtype: no float64 copy of the layer
    changed: Values = {}
    if carrier:
        changed[carrier[0].name] = _bias_base(carrier[0], values, teacher)
        if not add_to_bias(layer.node, _output_shift(layer.node, weight, shift), changed):
            return {}
    refit = np.moveaxis(new.reshape(weight.shape), -1, layer.weight.axis)
    changed[tensor.name] = np.ascontiguousarray(refit)
    return changed


def _bias_base(bias: gs.Constant, values: Values, teacher: GraphView | None) -> np.ndarray:
    """The bias a shift is added to: the teacher's (same name and shape), or the new
    value so far, or the bias as it is."""
    dense = teacher.tensors.get(bias.name) if teacher is not None else None
    if isinstance(dense, gs.Constant) and np.shape(dense.values) == np.shape(bias.values):
        return np.asarray(dense.values).astype(np.asarray(bias.values).dtype)
    return values.get(bias.name, bias.values)


def _solve(rows: np.ndarray, moments: Moments, kept: np.ndarray, ridge: float,
           with_bias: bool, prior_rows: np.ndarray | None = None):
    """(W', δ) = (W·E[x_d x̃ᵀ] + λ[P_S, 0]) · (E[x̃ x̃ᵀ] + λ I_S)⁻¹ with P the prior
    weights (W by default); δ = 0 without bias."""
    size = int(kept.sum()) + (1 if with_bias else 0)
    gram = moments.gram[:size, :size] / max(moments.count, 1)
    cross = np.array(moments.cross[:size].T, order="C")  # a copy: scaled in place
    cross /= max(moments.count, 1)
    target = rows @ cross
    del cross
    channels = int(kept.sum())
    damp = ridge * float(np.trace(gram[:channels, :channels])) / max(channels, 1) + 1e-12
    # in place (no n² or m×n temporaries): the damping on the kept channels' diagonal,
    # and toward their prior weights
    gram[np.arange(channels), np.arange(channels)] += damp
    target[:, :channels] += damp * (rows if prior_rows is None else prior_rows)[:, kept]
    try:
        solved = np.linalg.solve(gram, target.T).T
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(solved)):
        return None
    return solved[:, :channels], (solved[:, channels] if with_bias else None)


def _output_shift(node: gs.Node, weight: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per output channel: the bias shift, summed over kernel taps."""
    return family_for(node).sink.output_shift(node, weight, shift)
