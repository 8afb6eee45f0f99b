"""`jit`: jax.jit with the XLA compiler options this project measured best.

On the CPU backend, XLA hands convolutions (and some fusions) to YNNPACK by default;
its own (Eigen) convolutions were faster on the 2-core AVX2 machine the benchmarks ran
on — a train step at batch 16: resnet18 2.03 → 1.91 s, mobilenet_v2 2.50 → 1.82 s,
the OCR classifier 0.37 → 0.23 s; matmul-bound vit_b_16 3.65 → 3.57 s
(`tools/bench_train_step.py`). The option is passed per compilation, so other JAX code
in the process keeps XLA's defaults, and only where this jaxlib knows it (an unknown
option is an error there, checked once on a tiny function).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}  # "": no YNNPACK fusions


@functools.cache
def compiler_options() -> dict[str, str]:
    """The options every `jit` passes: CPU_OPTIONS on the CPU backend where this jax
    and jaxlib take them, else none."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda v: v + 1, compiler_options=CPU_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # noqa: BLE001 - an older jax (no such keyword) or jaxlib (no such option)
        return {}
    return dict(CPU_OPTIONS)


def jit(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    """`jax.jit(fn, **kwargs)` compiled with `compiler_options()`."""
    options = compiler_options()
    return jax.jit(fn, compiler_options=options, **kwargs) if options else jax.jit(fn, **kwargs)
