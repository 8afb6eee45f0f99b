"""The translation checked against onnxruntime before any use: every output within a
relative error of 1e-4 (float32) or 1e-2 (float16, bfloat16), or the model is refused
naming the first node whose translated output disagrees.

An output whose values all lie near zero is held to an absolute floor instead:
‖got − want‖ ≤ tol·‖want‖ + atol·√n, atol 1e-6 (float32) or 1e-4 (half), since
onnxruntime's fast logistic and tanh kernels differ from the exact functions by
~1e-7 in absolute terms (a saturated sigmoid map of a detector: 1e-2 relative)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import ModelProto

from ..errors import InputError, first_line
from ..targets import onnxruntime as target
from ..verify import relative_error
from .compile import jit
from .program import needed
from .translate import Translated, translate

HALF = (np.float16, "bfloat16")


@dataclass(frozen=True)
class Parity:
    """Relative error of each output of the translation against onnxruntime, its
    tolerance, and the outputs that fail it (within neither bound)."""

    errors: dict[str, float]
    tolerances: dict[str, float]
    failing: tuple[str, ...] = ()

    @property
    def worst(self) -> float:
        return max(self.errors.values(), default=0.0)


def tolerance(dtype: np.dtype) -> tuple[float, float]:
    """(relative, absolute per element) bounds: 1e-2 and 1e-4 for half-precision
    values, 1e-4 and 1e-6 otherwise."""
    half = np.dtype(dtype).name in ("float16", "bfloat16")
    return (1e-2, 1e-4) if half else (1e-4, 1e-6)


def _close(want: np.ndarray, got: np.ndarray) -> bool:
    rel, atol = tolerance(want.dtype)
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    diff = np.linalg.norm(got - want)
    return bool(diff <= rel * np.linalg.norm(want) + atol * np.sqrt(want.size))


def reference(model: ModelProto, feeds: dict[str, np.ndarray], names: list[str] | None = None
              ) -> dict[str, np.ndarray]:
    """onnxruntime's values (CPU, basic optimizations) of the outputs or of `names`."""
    probe = ModelProto()
    probe.CopyFrom(model)
    if names:
        del probe.graph.output[:]
        probe.graph.output.extend(type(model.graph.output[0])(name=n) for n in names)
    session = target.session(probe, optimization="basic")
    wanted = [o.name for o in session.get_outputs()]
    return dict(zip(wanted, session.run(wanted, feeds), strict=True))


def compare(want: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> Parity:
    errors, tolerances, failing = {}, {}, []
    for name, ref in want.items():
        value = np.asarray(got[name])
        same = value.shape == ref.shape
        errors[name] = relative_error(ref, value) if same else np.inf
        tolerances[name] = tolerance(ref.dtype)[0]
        if not (same and _close(ref, value)):
            failing.append(name)
    return Parity(errors, tolerances, tuple(failing))


def check_translation(model: ModelProto, feeds: dict[str, np.ndarray],
                      translated: Translated | None = None, **options: Any
                      ) -> tuple[Translated, Parity]:
    """Translate (unless given) and compare the jitted translation with onnxruntime on
    `feeds`; refuses, naming the op, a model that does not translate or disagrees."""
    translated = translated or translate(model, **options)
    try:
        want = reference(model, feeds)
    except Exception as exc:
        raise InputError(f"onnxruntime cannot run the model: {first_line(exc)}") from None
    got = jit(translated.function())(translated.params, feeds)
    parity = compare(want, got)
    if parity.failing:
        name = parity.failing[0]
        where = first_disagreement(model, translated, feeds)
        raise InputError(
            f"the JAX translation disagrees with onnxruntime{where}: output {name} has "
            f"relative error {parity.errors[name]:.2g} > {parity.tolerances[name]:g}")
    return translated, parity


def first_disagreement(model: ModelProto, translated: Translated,
                       feeds: dict[str, np.ndarray]) -> str:
    """' at <op> node '<name>' (relative error e)' for the first node whose output
    differs beyond tolerance, or '' when the intermediate values cannot be compared."""
    steps = needed(translated.program.steps, translated.program.outputs)
    names = [n for step in steps for n in step.outputs if n]
    try:
        want = reference(model, feeds, names)
        got = jit(translated.function(names))(translated.params, feeds)
    except Exception:
        return ""
    for step in steps:
        for name in step.outputs:
            if name in want and got.get(name) is not None:
                parity = compare({name: want[name]}, {name: got[name]})
                if parity.failing:
                    return f" at {step.label} (relative error {parity.errors[name]:.2g})"
    return ""
