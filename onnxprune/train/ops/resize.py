"""Resize and Upsample: nearest and (multi)linear, separable along each axis, with
the source coordinates and indices computed in numpy from the static sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..registry import register

if TYPE_CHECKING:
    from ..registry import Array, Node

COORDINATES = {
    "half_pixel": lambda x, scale, n_in, n_out: (x + 0.5) / scale - 0.5,
    "pytorch_half_pixel": lambda x, scale, n_in, n_out:
        (x + 0.5) / scale - 0.5 if n_out > 1 else 0 * x,
    "align_corners": lambda x, scale, n_in, n_out:
        x * (n_in - 1) / (n_out - 1) if n_out > 1 else 0 * x,
    "asymmetric": lambda x, scale, n_in, n_out: x / scale,
}
ROUNDING = {"round_prefer_floor": lambda x: np.ceil(x - 0.5),
            "round_prefer_ceil": lambda x: np.floor(x + 0.5),
            "floor": np.floor, "ceil": np.ceil}


def _resize_axis(node, x, axis, scale, n_out, mode, coordinates):
    """x resized along one axis: a gather (nearest) or a blend of two gathers (linear)."""
    xp, n_in = node.xp, x.shape[axis]
    source = COORDINATES[coordinates](np.arange(n_out, dtype=np.float64), scale, n_in, n_out)
    if mode == "nearest":
        index = ROUNDING[node.attr("nearest_mode", "round_prefer_floor")](source)
        return xp.take(x, np.clip(index, 0, n_in - 1).astype(np.int32), axis=axis)
    source = np.clip(source, 0, n_in - 1)
    low = np.floor(source).astype(np.int32)
    high = np.minimum(low + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    weight = (source - low).reshape(shape).astype(x.dtype)
    return xp.take(x, low, axis=axis) * (1 - weight) + xp.take(x, high, axis=axis) * weight


def resize_to(node: Node, x: Array, scales: Sequence[float], sizes: Sequence[int], mode: str,
              coordinates: str) -> Array:
    """Resize every axis whose size or scale changes."""
    if mode not in ("nearest", "linear"):
        raise node.refuse(f"mode {mode} is not translated (nearest and linear are)")
    if coordinates not in COORDINATES:
        raise node.refuse(f"coordinate_transformation_mode {coordinates} is not translated")
    for axis in range(x.ndim):
        if sizes[axis] != x.shape[axis] or scales[axis] != 1:
            x = _resize_axis(node, x, axis, scales[axis], sizes[axis], mode, coordinates)
    return x


@register("Resize", numpy=True, static=(1, 2, 3))
def resize(node: Node, x: Array, roi: Array | None = None, scales: Array | None = None,
           sizes: Array | None = None) -> Array:
    if node.opset < 11:
        roi, scales = None, roi  # opset 10: (X, scales)
    if node.attr("antialias", 0) or node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise node.refuse("antialias and keep_aspect_ratio_policy are not translated")
    axes = node.attr("axes") or list(range(x.ndim))
    full_scales, full_sizes = [1.0] * x.ndim, list(x.shape)
    if sizes is not None and np.asarray(sizes).size:
        for a, n in zip(axes, np.asarray(sizes).reshape(-1), strict=True):
            full_sizes[a], full_scales[a] = int(n), int(n) / x.shape[a]
    else:
        for a, s in zip(axes, np.asarray(scales, np.float64).reshape(-1), strict=True):
            full_sizes[a], full_scales[a] = int(np.floor(x.shape[a] * s)), float(s)
    coordinates = node.attr("coordinate_transformation_mode", "half_pixel")
    mode = node.attr("mode", "nearest")
    if node.opset < 11:
        coordinates = "asymmetric"
    return resize_to(node, x, full_scales, full_sizes, mode, coordinates)


@register("Upsample", numpy=True, static=(1,))
def upsample(node: Node, x: Array, scales: Array | None = None) -> Array:
    scales = np.asarray(node.attr("scales") if scales is None else scales, np.float64)
    sizes = [int(np.floor(n * s)) for n, s in zip(x.shape, scales, strict=True)]
    return resize_to(node, x, list(scales), sizes, node.attr("mode", "nearest"), "asymmetric")
