"""The compiler options of the project's jit: taken where jaxlib knows them, dropped
where it does not; values unchanged."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
from onnxprune.train import compile as compiling  # noqa: E402


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", precision="highest")


def test_jit_keeps_values_and_drops_ynnpack_fusions_on_cpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    ours = compiling.jit(_conv)
    np.testing.assert_allclose(ours(x, w), jax.jit(_conv)(x, w), rtol=1e-5, atol=1e-5)
    if jax.default_backend() == "cpu":
        assert compiling.compiler_options() == compiling.CPU_OPTIONS  # this jaxlib knows it
        assert "ynn_fusion" not in ours.lower(x, w).compile().as_text()


def test_unknown_option_is_dropped(monkeypatch):
    monkeypatch.setattr(compiling, "CPU_OPTIONS", {"xla_cpu_no_such_option": ""})
    compiling.compiler_options.cache_clear()
    try:
        assert compiling.compiler_options() == {}
        assert float(compiling.jit(lambda v: v * 2)(np.float32(3))) == 6
    finally:
        monkeypatch.undo()
        compiling.compiler_options.cache_clear()
