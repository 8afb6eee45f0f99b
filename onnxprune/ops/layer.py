"""What the compute families (conv, matmul, einsum) share: element counts, the bias
carriers after a layer, and the weight-operand checks of their hooks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from .norm import batchnorm_shift

if TYPE_CHECKING:
    from .registry import Carrier


def elements(shape: Sequence[int] | None) -> int:
    """Elements of a shape (0 when unknown)."""
    return int(math.prod(shape)) if shape is not None else 0


def own(tensor: gs.Tensor) -> bool:
    """A constant that only this reader reads."""
    return isinstance(tensor, gs.Constant) and len(tensor.outputs) == 1


def own_bias(node: gs.Node, index: int = 2) -> Carrier | None:
    """The node's own bias input as a carrier (factor 1), or None."""
    if len(node.inputs) > index and own(node.inputs[index]):
        return node.inputs[index], 1.0
    return None


def only_user(node: gs.Node) -> gs.Node | None:
    users = node.outputs[0].outputs
    return users[0] if len(users) == 1 else None


def added_after(node: gs.Node, channels: int | None, trailing: int = 0) -> Carrier | None:
    """An unshared constant that the node's one user (an Add) adds per output channel:
    `channels` values on the axis `trailing` axes before the last. None otherwise."""
    user = only_user(node)
    if user is None or user.op != "Add":
        return None
    other = [t for t in user.inputs if t is not node.outputs[0]]
    if len(other) == 1 and own(other[0]) and channels and _per_channel(
            tuple(other[0].shape), trailing, channels):
        return other[0], 1.0
    return None


def normalized_after(node: gs.Node) -> Carrier | None:
    """The shift of a BatchNormalization that is the node's one user, as a carrier."""
    user = only_user(node)
    return None if user is None else batchnorm_shift(user)


def _per_channel(shape: tuple, trailing: int, channels: int) -> bool:
    """Whether a constant of this shape adds one value per channel, the channels
    `trailing` axes before the last."""
    if len(shape) <= trailing or shape[len(shape) - trailing - 1] != channels:
        return False
    return int(np.prod(shape)) == channels


def weight_input(index: int) -> Callable[[gs.Node], bool]:
    """A `timed` hook: the node's input `index` is a constant."""

    def timed(node: gs.Node) -> bool:
        return len(node.inputs) > index and isinstance(node.inputs[index], gs.Constant)

    return timed


def reads_at(node: gs.Node, index: int, weight: gs.Constant) -> bool:
    """Whether the weight is the node's input `index`."""
    return len(node.inputs) > index and node.inputs[index] is weight


def per_output(weight: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """A refit's shift per weight row, summed per output channel (the first axis)."""
    return shift.reshape(weight.shape[0], -1).sum(axis=1)


def matrix_contribution(values: np.ndarray, axis: int, means: np.ndarray) -> np.ndarray | None:
    """Σ over removed inputs of a 2-D weight's slices × their mean input."""
    if values.ndim != 2:
        return None
    return np.tensordot(means, values, axes=([0], [axis]))
