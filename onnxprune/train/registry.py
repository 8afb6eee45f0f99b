"""The registry of op translations: (domain, op type) -> a function that reads like
the op's specification.

A translation receives a `Node` (attributes, opset, the array module to use) and the
node's input values in order (None for an omitted optional input), and returns one
value or a tuple of values, one per output.

    @register("Relu", numpy=True)
    def relu(node, x):
        return node.xp.maximum(x, 0)

`numpy=True` marks translations written against the array API that numpy and
`jax.numpy` share: when every input is a concrete numpy array (shape plumbing computed
from constants and from the fixed input shapes), they run in numpy at translation time
and their outputs stay constants. `static=(1,)` names the inputs that must be such
constants (a Reshape's target shape): they are never trainable and a value computed
from data there is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    import jax

    Array = np.ndarray | jax.Array  # numpy for constants, JAX for data and parameters
    Outputs = Array | tuple[Array | None, ...]  # a translation's values, one per output
    Translate = Callable[..., Outputs]  # (node: Node, *inputs: Array | None) -> Outputs

MS = "com.microsoft"
ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Translation:
    """One registered translation and what it needs of its inputs."""

    fn: Translate
    numpy: bool = False
    static: tuple[int, ...] = ()


TRANSLATIONS: dict[tuple[str, str], Translation] = {}
REFUSED: dict[tuple[str, str], str] = {}  # ops refused on purpose, with the reason


@dataclass
class Node:
    """What a translation knows about the node it translates."""

    op: str
    name: str
    attrs: dict[str, Any]
    opset: int
    xp: Any = np
    options: dict[str, Any] = field(default_factory=dict)
    outputs: int = 1
    domain: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        """An attribute's value (bytes decoded to str), or the default."""
        value = self.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    def refuse(self, reason: str) -> InputError:
        """The error a translation raises for a case it does not handle."""
        return InputError(f"cannot translate {key(self.domain, self.op)} node "
                          f"'{self.name}' to JAX: {reason}")


def register(*ops: str, domain: str = "", numpy: bool = False,
             static: tuple[int, ...] = ()) -> Callable[[Translate], Translate]:
    """Register the decorated function as the translation of `ops` in `domain`."""
    def wrap(fn: Translate) -> Translate:
        for op in ops:
            TRANSLATIONS[(domain, op)] = Translation(fn, numpy, static)
        return fn
    return wrap


def refuse(reason: str, *ops: str, domain: str = "") -> None:
    """Record ops that are not translated on purpose, and why."""
    for op in ops:
        REFUSED[(domain, op)] = reason


def lookup(domain: str, op: str) -> Translation | None:
    """The translation of an op, the default ONNX domain spelled either way."""
    domain = "" if domain in ONNX_DOMAINS else domain
    return TRANSLATIONS.get((domain, op))


def key(domain: str, op: str) -> str:
    """How an op is named in messages: `com.microsoft::Attention`, `Conv`."""
    return op if domain in ONNX_DOMAINS else f"{domain}::{op}"
