"""Calibration statistics of the inputs each layer multiplies, in matrix-view
column order: Σx² per column (Wanda) and the Gram matrix XᵀX (SparseGPT).

Layers are measured in *waves*: a wave holds the pending layers whose input does
not depend on another pending layer, so each layer is measured on the model with
every layer before it already sparsified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from ..errors import InputError, first_line
from .layers import Layer

IM2COL_ROWS = 4096  # positions sampled per batch for a convolution's Gram matrix


@dataclass
class InputStats:
    """Running sums over the rows of a layer's input matrix X."""

    count: int = 0
    column_sq: np.ndarray | None = None  # per column, or per entry [rows, columns]
    gram: np.ndarray | None = None

    def add_sq(self, column_sq: np.ndarray, count: int) -> None:
        self.column_sq = column_sq if self.column_sq is None else self.column_sq + column_sq
        self.count += count

    def add(self, rows: np.ndarray, gram: bool) -> None:
        rows = np.asarray(rows, np.float64)
        sq = (rows * rows).sum(0)
        self.column_sq = sq if self.column_sq is None else self.column_sq + sq
        if gram:
            product = rows.T @ rows
            self.gram = product if self.gram is None else self.gram + product
        self.count += len(rows)

    @property
    def hessian(self) -> np.ndarray:
        return self.gram / max(self.count, 1)


def measurable(layer: Layer, gram: bool) -> str | None:
    """Why a layer's input cannot be measured (its criterion falls back to magnitude)."""
    if layer.input_index != 1:
        return "weight is the left operand"
    if layer.op == "Conv" and gram and (layer.attrs.get("group", 1) != 1 or len(layer.shape) != 4):
        return "grouped or non-2-D convolution"
    return None


def input_rows(layer: Layer, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The layer's input as rows of its matrix view's columns."""
    if layer.op == "MatMul":
        return value.reshape(-1, value.shape[-1])
    if layer.op == "Gemm":
        return value.T if layer.attrs.get("transA", 0) else value
    return _im2col(layer, value, rng)


def channel_sq(layer: Layer, value: np.ndarray) -> np.ndarray:
    """Σx² of a convolution's input per matrix-view entry [K, R·S·C/g]: each channel's
    sum repeated for every kernel position, each output row seeing its own group."""
    groups = layer.attrs.get("group", 1)
    per_channel = np.square(value, dtype=np.float64).sum(axis=tuple(
        a for a in range(value.ndim) if a != 1))
    per_group = np.tile(per_channel.reshape(groups, -1), (1, int(np.prod(layer.shape[2:]))))
    return np.repeat(per_group, layer.shape[0] // groups, axis=0)


def _im2col(layer: Layer, value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sampled input patches of a 2-D convolution, columns in (r, s, c) order."""
    kernel = layer.shape[2:]
    strides = layer.attrs.get("strides", [1, 1])
    dilations = layer.attrs.get("dilations", [1, 1])
    pads = layer.attrs.get("pads", [0, 0, 0, 0])
    if layer.attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise InputError(f"{layer.node}: auto_pad convolutions are not measured")
    padded = np.pad(value, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations, strict=True)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    windows = windows[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    n, c, oh, ow = windows.shape[:4]
    picks = rng.choice(n * oh * ow, min(IM2COL_ROWS, n * oh * ow), replace=False)
    b, rest = np.divmod(picks, oh * ow)
    y, x = np.divmod(rest, ow)
    patches = windows[b, :, y, x]  # [P, C, R, S]
    return np.moveaxis(patches, 1, -1).reshape(len(picks), -1)


def waves(layers: list[Layer], model: ModelProto) -> list[list[Layer]]:
    """Layers in waves: each wave depends only on layers of earlier waves."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names = {layer.node for layer in layers}
    upstream = {id(layer): _upstream(layer.activation, producers, names) for layer in layers}
    pending, found = list(layers), []
    while pending:
        blocked = {layer.node for layer in pending}
        wave = [layer for layer in pending if not upstream[id(layer)] & blocked]
        found.append(wave)
        pending = [layer for layer in pending if layer not in wave]
    return found


def _upstream(tensor: str, producers: dict, names: set[str]) -> set[str]:
    """Names of the layer nodes the tensor is computed from."""
    seen, stack, found = set(), [tensor], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.name in names:
            found.add(node.name)
        stack.extend(node.input)
    return found


def measure(model: ModelProto, wave: list[Layer], stream: Callable[[], Iterator[dict]],
            gram: bool, seed: int = 0, progress: Callable[[int], None] | None = None
            ) -> dict[int, InputStats]:
    """Statistics of every layer of a wave over the calibration stream."""
    from ..verify import session_for_outputs

    inputs = {value.name for value in model.graph.input}
    names = sorted({layer.activation for layer in wave} - inputs)
    sess = session_for_outputs(model, names) if names else None
    stats = {id(layer): InputStats() for layer in wave}
    rng = np.random.default_rng(seed)
    for feeds in stream():
        values = dict(feeds)
        try:
            values.update(zip(names, sess.run(names, feeds), strict=True) if sess else {})
        except Exception as exc:
            raise InputError(f"the model does not run on the calibration data: "
                             f"{first_line(exc)}") from None
        for layer in wave:
            _accumulate(stats[id(layer)], layer, values[layer.activation], gram, rng)
        if progress:
            progress(len(next(iter(feeds.values()))))
    return stats


def _accumulate(stats: InputStats, layer: Layer, value: np.ndarray, gram: bool,
                rng: np.random.Generator) -> None:
    if layer.op == "Conv" and not gram:
        stats.add_sq(channel_sq(layer, value), value.size // value.shape[1])
    else:
        stats.add(input_rows(layer, value, rng), gram)
