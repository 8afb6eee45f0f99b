"""Shape plumbing: Shape, Size, Reshape, Flatten, (Un)Squeeze, Transpose, Expand, Tile,
ConstantOfShape, Range, DepthToSpace, SpaceToDepth, Trilu, OneHot. Sizes, shapes and
axes are static inputs: computed in numpy at translation time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..registry import register

if TYPE_CHECKING:
    import numpy.typing as npt

    from ..registry import Array, Node


def ints(values: npt.ArrayLike) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


@register("Shape", numpy=True)
def shape(node: Node, x: Array) -> Array:
    """The (static) shape of x, sliced by `start`/`end` from opset 15."""
    dims = np.array(x.shape, np.int64)
    return dims[node.attr("start", 0):node.attr("end", len(dims))]


@register("Size", numpy=True)
def size(node: Node, x: Array) -> Array:
    return np.array(int(np.prod(x.shape)), np.int64)


@register("Reshape", numpy=True, static=(1,))
def reshape(node: Node, x: Array, target: Array) -> Array:
    """0 copies the input's size at that position (unless `allowzero`), −1 is inferred."""
    target = ints(target)
    if not node.attr("allowzero", 0):
        target = [x.shape[i] if t == 0 else t for i, t in enumerate(target)]
    return node.xp.reshape(x, target)


@register("Flatten", numpy=True)
def flatten(node: Node, x: Array) -> Array:
    axis = node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return node.xp.reshape(x, (int(np.prod(x.shape[:axis])), -1))


def _axes(node, given, rank):
    axes = node.attr("axes") if node.opset < 13 else (None if given is None else ints(given))
    return None if axes is None else tuple(a % rank for a in axes)


@register("Squeeze", numpy=True, static=(1,))
def squeeze(node: Node, x: Array, axes: Array | None = None) -> Array:
    axes = _axes(node, axes, x.ndim)
    if axes is None:
        axes = tuple(i for i, d in enumerate(x.shape) if d == 1)
    return node.xp.squeeze(x, axis=axes)


@register("Unsqueeze", numpy=True, static=(1,))
def unsqueeze(node: Node, x: Array, axes: Array | None = None) -> Array:
    axes = ints(node.attr("axes") if node.opset < 13 else axes)
    rank = x.ndim + len(axes)
    return node.xp.expand_dims(x, tuple(a % rank for a in axes))


@register("Transpose", numpy=True)
def transpose(node: Node, x: Array) -> Array:
    return node.xp.transpose(x, node.attr("perm", list(range(x.ndim))[::-1]))


@register("Expand", numpy=True, static=(1,))
def expand(node: Node, x: Array, target: Array) -> Array:
    """Broadcast x and `shape` against each other (both ways, as numpy does)."""
    return node.xp.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(ints(target))))


@register("Tile", numpy=True, static=(1,))
def tile(node: Node, x: Array, repeats: Array) -> Array:
    return node.xp.tile(x, ints(repeats))


@register("ConstantOfShape", numpy=True, static=(0,))
def constant_of_shape(node: Node, target: Array) -> Array:
    value = node.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return np.full(ints(target), value[0], dtype=value.dtype)


@register("Range", numpy=True, static=(0, 1, 2))
def range_(node: Node, start: Array, limit: Array, delta: Array) -> Array:
    return np.arange(start.item(), limit.item(), delta.item(), dtype=np.asarray(start).dtype)


@register("DepthToSpace", numpy=True)
def depth_to_space(node: Node, x: Array) -> Array:
    """[N, C·b², H, W] → [N, C, H·b, W·b]; DCR or CRD order of the channel blocks."""
    b, (n, c, h, w) = node.attr("blocksize"), x.shape
    if node.attr("mode", "DCR") == "DCR":
        y = node.xp.transpose(node.xp.reshape(x, (n, b, b, c // b**2, h, w)), (0, 3, 4, 1, 5, 2))
    else:
        y = node.xp.transpose(node.xp.reshape(x, (n, c // b**2, b, b, h, w)), (0, 1, 4, 2, 5, 3))
    return node.xp.reshape(y, (n, c // b**2, h * b, w * b))


@register("SpaceToDepth", numpy=True)
def space_to_depth(node: Node, x: Array) -> Array:
    b, (n, c, h, w) = node.attr("blocksize"), x.shape
    y = node.xp.reshape(x, (n, c, h // b, b, w // b, b))
    return node.xp.reshape(node.xp.transpose(y, (0, 3, 5, 1, 2, 4)), (n, c * b * b, h // b, w // b))


@register("Trilu", numpy=True, static=(1,))
def trilu(node: Node, x: Array, k: Array | None = None) -> Array:
    k = 0 if k is None else ints(k)[0]
    return node.xp.triu(x, k) if node.attr("upper", 1) else node.xp.tril(x, k)


@register("OneHot", numpy=True, static=(1,))
def one_hot(node: Node, indices: Array, depth: Array, values: Array) -> Array:
    """values[1] where the index (negative counts from the end) hits, values[0] elsewhere."""
    depth = ints(depth)[0]
    xp = node.xp
    indices = xp.where(indices < 0, indices + depth, indices)
    hot = xp.expand_dims(indices, -1) == xp.arange(depth)
    hot = xp.moveaxis(hot, -1, node.attr("axis", -1) % (indices.ndim + 1))
    return xp.where(hot, values[1], values[0])
