"""Element-wise arithmetic, comparison, logic and casts (numpy broadcasting, as ONNX)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import erf
from onnx import helper

from ..registry import register

if TYPE_CHECKING:
    from ..registry import Array, Node

BINARY = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Equal": "equal",
          "Less": "less", "LessOrEqual": "less_equal", "Greater": "greater",
          "GreaterOrEqual": "greater_equal", "And": "logical_and", "Or": "logical_or",
          "Xor": "logical_xor", "BitShift": None}
UNARY = {"Neg": "negative", "Abs": "abs", "Sqrt": "sqrt", "Exp": "exp", "Log": "log",
         "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Sin": "sin",
         "Cos": "cos", "Tan": "tan", "Asin": "arcsin", "Acos": "arccos", "Atan": "arctan",
         "Sinh": "sinh", "Cosh": "cosh", "Asinh": "arcsinh", "Acosh": "arccosh",
         "Atanh": "arctanh", "Tanh": "tanh", "Not": "logical_not", "IsNaN": "isnan"}
VARIADIC = {"Max": "maximum", "Min": "minimum", "Sum": "add"}


def _binary(name: str):
    return lambda node, a, b: getattr(node.xp, name)(a, b)


def _unary(name: str):
    return lambda node, x: getattr(node.xp, name)(x)


for _op, _name in BINARY.items():
    if _name:
        register(_op, numpy=True)(_binary(_name))
for _op, _name in UNARY.items():
    register(_op, numpy=True)(_unary(_name))


@register(*VARIADIC, "Mean", numpy=True)
def variadic(node: Node, *xs: Array) -> Array:
    """Max, Min, Sum, Mean of any number of broadcast inputs."""
    fn = getattr(node.xp, VARIADIC.get(node.op, "add"))
    total = xs[0]
    for x in xs[1:]:
        total = fn(total, x)
    return total / len(xs) if node.op == "Mean" else total


@register("Div", numpy=True)
def div(node: Node, a: Array, b: Array) -> Array:
    """True division for floats; integer division truncates toward zero."""
    xp = node.xp
    if not xp.issubdtype(xp.result_type(a, b), xp.integer):
        return a / b
    q = a // b
    return xp.where((a % b != 0) & ((a < 0) != (b < 0)), q + 1, q)


@register("Mod", numpy=True)
def mod(node: Node, a: Array, b: Array) -> Array:
    """`fmod=1`: the sign of the dividend (C fmod); else that of the divisor."""
    return node.xp.fmod(a, b) if node.attr("fmod", 0) else node.xp.mod(a, b)


@register("Pow", numpy=True)
def power(node: Node, x: Array, y: Array) -> Array:
    """x ** y; a constant integral exponent is an integer power (negative bases work)."""
    if node.xp is jnp and isinstance(y, np.ndarray) and y.size == 1 \
            and float(y.reshape(-1)[0]).is_integer():
        return lax.integer_pow(x, int(y.reshape(-1)[0]))
    return node.xp.power(x, node.xp.asarray(y, dtype=x.dtype))


@register("Reciprocal", numpy=True)
def reciprocal(node: Node, x: Array) -> Array:
    return 1 / x


@register("IsInf", numpy=True)
def isinf(node: Node, x: Array) -> Array:
    positive, negative = node.attr("detect_positive", 1), node.attr("detect_negative", 1)
    return node.xp.isinf(x) & (((x > 0) & bool(positive)) | ((x < 0) & bool(negative)))


@register("Erf")
def erf_(node: Node, x: Array) -> Array:
    return erf(x)


@register("Where", numpy=True)
def where(node: Node, condition: Array, x: Array, y: Array) -> Array:
    return node.xp.where(condition, x, y)


@register("Identity", numpy=True)
def identity(node: Node, x: Array) -> Array:
    return x


def dtype_of(node: Node, onnx_type: int) -> np.dtype:
    """The array module's dtype for an ONNX element type (int64 is int32 in JAX
    unless 64-bit mode is on)."""
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    return dtype if node.xp is np else jax.dtypes.canonicalize_dtype(dtype)


@register("Cast", numpy=True)
def cast(node: Node, x: Array) -> Array:
    return x.astype(dtype_of(node, node.attr("to")))


@register("CastLike", numpy=True)
def cast_like(node: Node, x: Array, like: Array) -> Array:
    return x.astype(like.dtype)


@register("Clip", numpy=True)
def clip(node: Node, x: Array, low: Array | None = None, high: Array | None = None) -> Array:
    """Clip to [min, max] (inputs from opset 11, attributes before)."""
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
    if low is not None:
        x = node.xp.maximum(x, node.xp.asarray(low, dtype=x.dtype))
    if high is not None:
        x = node.xp.minimum(x, node.xp.asarray(high, dtype=x.dtype))
    return x
