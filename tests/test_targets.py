"""Deployment targets: onnxruntime sessions and TensorRT settings."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnxruntime as ort
import pytest
from helpers import GraphBuilder

import onnxprune
from onnxprune.errors import InputError
from onnxprune.targets import onnxruntime as ort_target
from onnxprune.targets import tensorrt

LOG = [
    "[I] [TRT] (Sparsity) Layers eligible for sparse math: /conv1/Conv, /fc/Gemm, MatMul_3",
    "[V] [TRT] unrelated line",
    "[I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: /fc/Gemm",
]


def small_model():
    b = GraphBuilder(seed=1)
    x = b.input("x", [2, 16])
    return b.build(b.op("MatMul", [x, b.weight(16, 8)]))


def test_provider_options_enable_fp16_and_sparse_weights():
    options = tensorrt.provider_options(cache_dir="/tmp/cache", workspace_bytes=2 << 30,
                                        input_shapes={"x": (1, 3, 224, 224)})
    assert options["trt_sparsity_enable"] == "True" and options["trt_fp16_enable"] == "True"
    assert options["trt_int8_enable"] == "False"
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == "/tmp/cache"
    assert options["trt_max_workspace_size"] == str(2 << 30)
    assert options["trt_profile_opt_shapes"] == "x:1x3x224x224"
    assert all(isinstance(v, str) for v in options.values())


def test_trtexec_command_matches_the_provider_settings():
    command = tensorrt.trtexec_command("m.onnx", input_shapes={"a": (1, 16), "b": (1, 16)},
                                       engine="m.plan")
    assert command == ["trtexec", "--onnx=m.onnx", "--sparsity=enable", "--fp16",
                       "--shapes=a:1x16,b:1x16", "--saveEngine=m.plan", "--verbose"]
    assert "--int8" in tensorrt.trtexec_command("m.onnx", fp16=False, int8=True)
    with pytest.raises(InputError):
        tensorrt.trtexec_command("m.onnx", sparsity="on")


def test_sparse_tactics_are_read_from_the_builder_log():
    tactics = tensorrt.sparse_tactics(LOG)
    assert tactics.eligible == ["/conv1/Conv", "/fc/Gemm", "MatMul_3"]
    assert tactics.picked == ["/fc/Gemm"]
    assert tensorrt.sparse_tactics(["(Sparsity) TRT inference plan picked sparse "
                                    "implementation for layers:"]).picked == []


def test_session_falls_back_to_cpu_and_runs_a_sparsified_model():
    sparse, _ = onnxprune.sparsify(small_model(), "2:4", all_layers=True)
    sess = ort_target.session(sparse, providers=ort_target.providers(), optimization="all",
                              threads=1, log_severity=ort_target.ERRORS)
    assert sess.get_providers()[-1] == "CPUExecutionProvider"
    x = np.ones((2, 16), np.float32)
    assert sess.run(None, {"x": x})[0].shape == (2, 8)


def test_providers_carry_tensorrt_options_and_refuse_unavailable_ones():
    chosen = ort_target.providers()
    assert chosen[-1] == "CPUExecutionProvider"
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(InputError, match="not available"):
            ort_target.providers(["TensorrtExecutionProvider"])
    else:
        name, options = ort_target.providers(["TensorrtExecutionProvider"])[0]
        assert options["trt_sparsity_enable"] == "True"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="TensorRT is not installed (pip install 'onnxprune[tensorrt]', "
                           "needs an NVIDIA GPU): the engine build is not tested here")
def test_engine_build_reports_sparse_tactics(tmp_path):
    b = GraphBuilder(seed=2)
    x = b.input("x", [64, 1024])
    model = b.build(b.op("MatMul", [x, b.weight(1024, 1024)]))
    sparse, _ = onnxprune.sparsify(model, "2:4")
    path = tmp_path / "sparse.onnx"
    onnxprune.model.save(sparse, path)
    report = tensorrt.build_engine(path, engine=tmp_path / "sparse.plan")
    assert report.engine_bytes > 0 and report.tactics.eligible


def test_engine_build_without_tensorrt_says_how_to_install(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed")
    with pytest.raises(InputError, match="onnxprune\\[tensorrt\\]"):
        tensorrt.build_engine(tmp_path / "missing.onnx")
