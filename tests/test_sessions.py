"""The one session factory, `targets.onnxruntime.session`: settings, initializer
overrides, extra outputs, model sources, one-line failures; and no other module of the
package builds onnxruntime sessions."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import GraphBuilder
from onnx import helper

import onnxprune
from onnxprune.errors import InputError, ModelError
from onnxprune.targets.onnxruntime import ERRORS, QUIET, runtime_failure, session

PACKAGE = Path(onnxprune.__file__).parent
FACTORY = PACKAGE / "targets" / "onnxruntime.py"
SESSION_CODE = re.compile(r"^\s*(import onnxruntime|from onnxruntime)|InferenceSession\(|"
                          r"SessionOptions\(", re.MULTILINE)
X = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)


def chain():
    """x -> MatMul(W) -> Relu -> y, and the names of W and the MatMul output."""
    b = GraphBuilder(seed=1)
    x = b.input("x", [2, 16])
    weight = b.weight(16, 8)
    hidden = b.op("MatMul", [x, weight])
    return b.build(b.op("Relu", [hidden])), weight, hidden


def custom_op_model():
    b = GraphBuilder()
    x = b.input("x", [2, 16])
    model = b.build(b.op("Relu", [x]))
    model.graph.node.append(helper.make_node("MyOp", [model.graph.output[0].name], ["z"],
                                             domain="custom.ops"))
    model.graph.output[0].name = "z"
    model.opset_import.append(helper.make_opsetid("custom.ops", 1))
    return model


def test_only_the_factory_builds_sessions():
    offenders = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
                 if path != FACTORY and SESSION_CODE.search(path.read_text())]
    assert offenders == []
    assert len(SESSION_CODE.findall(FACTORY.read_text())) >= 3  # the pattern finds them


def test_defaults_are_the_verification_settings():
    options = session(chain()[0]).get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.log_severity_level == QUIET
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (0, 0)
    with pytest.raises(RuntimeError):
        options.get_session_config_entry("session.intra_op.allow_spinning")


def test_settings_reach_the_session():
    sess = session(chain()[0], optimization="none", threads=2, inter_threads=1,
                   spinning=False, log_severity=ERRORS)
    options = sess.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.log_severity_level == ERRORS
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    with pytest.raises(InputError, match="optimization must be one of"):
        session(chain()[0], optimization="fast")


def test_initializer_overrides_replace_weights_and_outlive_their_arrays():
    model, weight, _ = chain()
    data = model.SerializeToString()
    dense = session(data).run(None, {"x": X})[0]
    sess = session(data, optimization="none", initializers={weight: np.zeros((16, 8),
                                                                             np.float32)})
    gc.collect()
    assert np.any(dense) and not np.any(sess.run(None, {"x": X})[0])
    assert np.array_equal(session(data, optimization="none").run(None, {"x": X})[0], dense)


def test_extra_outputs_add_intermediate_tensors_without_changing_the_model():
    model, weight, hidden = chain()
    sess = session(model, outputs=[hidden, model.graph.output[0].name])
    assert [o.name for o in sess.get_outputs()] == [model.graph.output[0].name, hidden]
    value = sess.run([hidden], {"x": X})[0]
    assert np.allclose(value, X @ onnx.numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == weight)), atol=1e-5)
    assert len(model.graph.output) == 1
    with pytest.raises(TypeError, match="ModelProto"):
        session(model.SerializeToString(), outputs=[hidden])


def test_a_path_with_external_data_loads(tmp_path):
    model = chain()[0]
    want = session(model).run(None, {"x": X})[0]
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True,
                    location="m.onnx.data", size_threshold=0)
    assert (tmp_path / "m.onnx.data").exists()
    assert np.array_equal(session(tmp_path / "m.onnx").run(None, {"x": X})[0], want)


def test_creation_failures_are_one_line_or_onnxruntimes_own():
    model = custom_op_model()
    with pytest.raises(ModelError, match=r"^onnxruntime cannot run op MyOp \(domain "
                                         r"custom.ops\)$"):
        session(model)
    with pytest.raises(Exception) as raw:
        session(model, explain=False)
    assert not isinstance(raw.value, ModelError)
    assert runtime_failure(raw.value, model) == "onnxruntime cannot run op MyOp (domain " \
                                                "custom.ops)"
