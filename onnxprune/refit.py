"""Layer-by-layer least-squares refit of the layers that absorb channel groups.

Each consumer that its op family says can be refit (the `sink` hook in `ops/`: Conv,
ConvTranspose, Gemm, MatMul, Einsum) keeps its output close to the dense
model's: with x the activations entering it in the model pruned so far (earlier
layers already pruned and refit) and x_d those of the dense model, its kept weights
W' and a bias shift δ minimize ‖W'·x + δ − W·x_d‖² + λ‖W' − W‖² over the
calibration data (the channel-pruning reconstruction of He et al. 2017, in the
closed form of Kwon et al. 2022). Layers are visited in topological order, so errors
do not compound. A k×k convolution is fit per kernel position on the channel
statistics (each tap's weights map channels to outputs), which keeps the systems at
channel size whatever the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from .depgraph import DepGraph, Slot
from .errors import InputError, first_line
from .model import export
from .ops import family_for
from .reconstruct import add_to_bias, bias_of, sinks
from .rewrite import mask_sinks
from .targets.onnxruntime import serialized, session
from .verify import truncated


@dataclass
class Layer:
    """A consumer to refit: its node, weight and input slots, kept input channels, and
    its dense weights."""

    node: gs.Node
    weight: Slot
    act: Slot
    kept: np.ndarray
    dense: np.ndarray


@dataclass
class Moments:
    """E[x̃ x̃ᵀ] and E[x_d x̃ᵀ], with x̃ the kept channels of x and a trailing 1."""

    gram: np.ndarray
    cross: np.ndarray
    count: int = 0

    def add(self, current: np.ndarray, dense: np.ndarray, kept: np.ndarray) -> None:
        """One batch (rows × channels); products in float32, sums in float64."""
        features = np.hstack([current[:, kept], np.ones((len(current), 1), current.dtype)])
        self.gram += features.T @ features
        self.cross += dense.T @ features
        self.count += len(current)


def refit_layerwise(dep: DepGraph, removed_units: dict[int, np.ndarray], original: ModelProto,
                    stream, ridge: float = 0.1,
                    progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Refit every consumer of an exact group, in place on the analyzed graph (removed
    channels zeroed). Returns (layers refit, layers left as they were)."""
    layers = _layers(dep, removed_units)
    dense = export(dep.view.graph, original)
    changed = _zero_removed(dep, removed_units)
    done = 0
    for level in _levels(dep.view.graph, layers):
        probe = truncated(dense, sorted({layer.act.tensor for layer in level}))
        kept = {t.name for t in probe.graph.initializer}
        with serialized(probe) as data:
            reference = session(data, optimization="none", explain=False)
            current = session(data, optimization="none", explain=False, initializers={
                n: dep.view.tensors[n].values for n in changed if n in kept})
            moments = _moments(reference, current, level, stream, progress)
        for layer in level:
            names = _refit(dep, layer, moments[id(layer)], ridge)
            changed |= names
            done += bool(names)
    return done, len(layers) - done


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
                layers.append(Layer(node, weight, act, ~np.isin(group.members[act], units),
                                    np.array(dep.view.const(weight.tensor), np.float64)))
    return layers


def _refittable(node: gs.Node, weight: Slot, view) -> bool:
    """A float constant only this layer reads, that its family can refit."""
    tensor = view.tensors.get(weight.tensor)
    if not isinstance(tensor, gs.Constant) or len(tensor.outputs) != 1 or \
            not np.issubdtype(np.asarray(tensor.values).dtype, np.floating):
        return False
    return family_for(node).sink.refittable(node, tensor)


def _zero_removed(dep: DepGraph, removed_units: dict[int, np.ndarray]) -> set[str]:
    """Zero the removed units at their consumers, in place (they are sliced away later);
    the names of the constants changed."""
    masked = mask_sinks(dep, removed_units).tensors()
    changed = set()
    for name, tensor in dep.view.tensors.items():
        other = masked.get(name)
        if isinstance(tensor, gs.Constant) and isinstance(other, gs.Constant) and \
                not np.array_equal(np.asarray(tensor.values), np.asarray(other.values)):
            tensor.values = other.values
            changed.add(name)
    return changed


def _levels(graph: gs.Graph, layers: list[Layer]) -> list[list[Layer]]:
    """Layers grouped so that no layer of a level feeds another of the same level."""
    by_node = {id(layer.node): layer for layer in layers}
    depth_of: dict[str, int] = {}
    levels: dict[int, list[Layer]] = {}
    for node in graph.nodes:
        depth = max((depth_of.get(t.name, 0) for t in node.inputs), default=0)
        if id(node) in by_node:
            depth += 1
            levels.setdefault(depth, []).append(by_node[id(node)])
        for tensor in node.outputs:
            depth_of[tensor.name] = depth
    return [levels[d] for d in sorted(levels)]


def _moments(reference, current, level: list[Layer], stream, progress) -> dict[int, Moments]:
    """Input moments of each layer of a level over the calibration stream (shared by
    layers that read the same input and keep the same channels, as Q, K and V do)."""
    names = sorted({layer.act.tensor for layer in level})
    shared: dict[tuple, Moments] = {}
    for layer in level:
        width = int(layer.kept.sum()) + 1
        shared.setdefault(_input_key(layer), Moments(np.zeros((width, width)),
                                                     np.zeros((len(layer.kept), width))))
    for feeds in stream():
        try:
            dense = dict(zip(names, reference.run(names, feeds), strict=True))
            pruned = dict(zip(names, current.run(names, feeds), strict=True))
        except Exception as exc:
            raise InputError(f"the model does not run on the calibration data: "
                             f"{first_line(exc)}") from None
        for key, moments in shared.items():
            tensor, axis, kept = key[0], key[1], np.frombuffer(key[2], bool)
            moments.add(_rows(pruned[tensor], axis), _rows(dense[tensor], axis), kept)
        if progress:
            progress(len(next(iter(feeds.values()))))
    return {id(layer): shared[_input_key(layer)] for layer in level}


def _input_key(layer: Layer) -> tuple:
    return layer.act.tensor, layer.act.axis, np.asarray(layer.kept, bool).tobytes()


def _rows(value: np.ndarray, axis: int) -> np.ndarray:
    """Channels last, every other axis flattened into rows (float32)."""
    moved = np.moveaxis(np.asarray(value, np.float32), axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def _refit(dep: DepGraph, layer: Layer, moments: Moments, ridge: float) -> set[str]:
    """Solve for the layer's kept weights and bias shift; the names of the constants
    changed (none when the fit fails or the shift has no bias to go to)."""
    tensor = dep.view.tensors[layer.weight.tensor]
    weight = np.moveaxis(layer.dense, layer.weight.axis, -1)
    rows = weight.reshape(-1, weight.shape[-1])
    carrier = bias_of(layer.node)
    solved = _solve(rows, moments, layer.kept, ridge, carrier is not None)
    if solved is None:
        return set()
    fitted, shift = solved
    new = np.zeros_like(rows)
    new[:, layer.kept] = fitted
    if carrier and not add_to_bias(layer.node, _output_shift(layer.node, weight, shift)):
        return set()
    values = np.moveaxis(new.reshape(weight.shape), -1, layer.weight.axis)
    tensor.values = values.astype(np.asarray(tensor.values).dtype)
    return {tensor.name} | ({carrier[0].name} if carrier else set())


def _solve(rows: np.ndarray, moments: Moments, kept: np.ndarray, ridge: float,
           with_bias: bool):
    """(W', δ) = (W·E[x_d x̃ᵀ] + λ[W_S, 0]) · (E[x̃ x̃ᵀ] + λ I_S)⁻¹; δ = 0 without bias."""
    size = int(kept.sum()) + (1 if with_bias else 0)
    gram = moments.gram[:size, :size] / max(moments.count, 1)
    target = rows @ (moments.cross[:, :size] / max(moments.count, 1))
    channels = int(kept.sum())
    damp = ridge * float(np.trace(gram[:channels, :channels])) / max(channels, 1) + 1e-12
    prior = np.zeros_like(target)
    prior[:, :channels] = rows[:, kept]
    penalty = np.zeros(size)
    penalty[:channels] = damp
    try:
        solved = np.linalg.solve(gram + np.diag(penalty), (target + damp * prior).T).T
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(solved)):
        return None
    return solved[:, :channels], (solved[:, channels] if with_bias else None)


def _output_shift(node: gs.Node, weight: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per output channel: the bias shift, summed over kernel taps."""
    return family_for(node).sink.output_shift(node, weight, shift)
