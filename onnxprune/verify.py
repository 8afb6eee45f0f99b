"""Verification of written models: full checker, strict shape inference, and an
onnxruntime run on sample inputs; plus output comparison helpers."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import ModelProto

from .depgraph import DepGraph
from .errors import ModelError, VerificationError, first_line
from .finite import check_finite_outputs, check_finite_weights
from .model import EXTERNAL_DATA_THRESHOLD, _weight_bytes, export, weightless
from .rewrite import mask_sinks, removed_slots
from .shapes import input_specs


def sample_feeds(model: ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0
                 ) -> dict[str, np.ndarray]:
    """Random inputs of the right dtypes (small non-negative integers for int inputs)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in input_specs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(spec.type.tensor_type.elem_type)
        shape = shapes[spec.name]
        if np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[spec.name] = np.ones(shape, dtype)
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


@contextlib.contextmanager
def serialized(model: ModelProto) -> Iterator[bytes | str]:
    """The model as bytes, or as a temporary path with external data when it is too
    large for one protobuf message; serialized once for every consumer."""
    if _weight_bytes(model) < EXTERNAL_DATA_THRESHOLD:
        yield model.SerializeToString()
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
        yield path


def session(model: ModelProto | bytes | str, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session for a model, its bytes, or its path."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures are reported as one clear error line
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        options.intra_op_num_threads = threads
    if isinstance(model, ModelProto):
        with serialized(model) as data:
            return _open(data, options, model)
    return _open(model, options)


def _open(model: bytes | str, options: ort.SessionOptions, proto: ModelProto | None = None
          ) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(runtime_failure(exc, proto)) from None


# Domains whose operators onnxruntime implements (others need a custom-op library).
RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                   "com.microsoft.experimental", "ai.onnx.training",
                   "ai.onnx.preview.training", "com.ms.internal.nhwc"}
UNREGISTERED = re.compile(r"([\w.]*):(\w+)\(-?\d+\) is not a registered function/op")


def runtime_failure(exc: BaseException, model: ModelProto | None = None) -> str:
    """Why onnxruntime cannot load or run a model, in one line: the operator and
    domain it lacks when that is the cause."""
    found = UNREGISTERED.search(str(exc))
    missing = (found.group(2), found.group(1)) if found else _foreign_op(model)
    if missing:
        return f"onnxruntime cannot run op {missing[0]} (domain {missing[1] or 'ai.onnx'})"
    return f"onnxruntime cannot load the model: {first_line(exc)}"


def _foreign_op(model: ModelProto | None) -> tuple[str, str] | None:
    """The first node of a domain onnxruntime lacks (model-local functions aside)."""
    if model is None:
        return None
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in local:
            return node.op_type, node.domain
    return None


def session_with(model: bytes | str, weights: dict[str, np.ndarray]) -> ort.InferenceSession:
    """A CPU session with some initializers replaced. Graph optimizations are off: they
    would fold the model's own initializers (Conv+BatchNorm fusion, ...) first."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures are reported as one clear error line
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
              for name, value in weights.items()}
    for name, value in values.items():
        options.add_initializer(name, value)
    sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    sess._replaced_weights = values  # the session reads them; keep them alive with it
    return sess


def truncated(model: ModelProto, outputs: list[str]) -> ModelProto:
    """The part of a model that computes `outputs` (now its only outputs): onnxruntime
    runs every node of a model whatever is fetched, so a shorter model runs faster.
    Graph inputs are all kept, so the same feeds fit."""
    producer = {name: node for node in model.graph.node for name in node.output}
    needed, stack, seen = set(), list(outputs), set()
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if name in seen or node is None:
            continue
        seen.add(name)
        if id(node) not in needed:
            needed.add(id(node))
            stack.extend(_names_read(node))
    graph = onnx.helper.make_graph(
        [n for n in model.graph.node if id(n) in needed], model.graph.name,
        list(model.graph.input), [onnx.ValueInfoProto(name=n) for n in outputs],
        [t for t in model.graph.initializer if t.name in _all_read(model.graph, needed)])
    part = onnx.helper.make_model(graph, opset_imports=list(model.opset_import),
                                  ir_version=model.ir_version)
    part.functions.extend(model.functions)
    return part


def _names_read(node: onnx.NodeProto) -> set[str]:
    """Every tensor name a node reads, its subgraphs' outer-scope reads included."""
    names = {n for n in node.input if n}
    for attr in node.attribute:
        for sub in list(attr.g.node if attr.HasField("g") else []) + [
                n for g in attr.graphs for n in g.node]:
            names |= _names_read(sub)
    return names


def _all_read(graph: onnx.GraphProto, needed: set[int]) -> set[str]:
    return {name for node in graph.node if id(node) in needed for name in _names_read(node)}


def session_for_outputs(model: ModelProto, names: list[str]) -> ort.InferenceSession:
    """A session that also returns the named intermediate tensors."""
    probe = ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    return session(probe)


def run(model: ModelProto | bytes | str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of one onnxruntime run, by output name."""
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def run_source(model: ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of a model a command was given (or its masked reference) on the sample
    inputs; a ModelError saying why when onnxruntime cannot run it."""
    try:
        return run(model, feeds)
    except ModelError:
        raise
    except Exception as exc:
        if _foreign_op(model):
            raise ModelError(runtime_failure(exc, model)) from None
        shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
        raise ModelError(f"the model does not run on sample inputs ({shapes}): "
                         f"{first_line(exc)}; give the right shapes with --input-shape"
                         ) from None


def check_written(model: ModelProto, feeds: dict[str, np.ndarray],
                  reference: dict[str, np.ndarray] | None = None,
                  source: ModelProto | None = None) -> dict[str, np.ndarray]:
    """Every invariant of a model we write; returns its outputs on `feeds`.
    No NaN or infinity: in a weight, unless `source` (the model it was made from)
    holds them in the weight of that name; in an output, unless it is not finite in
    `reference` (the outputs it is compared with) either."""
    with serialized(model) as data:
        try:
            onnx.checker.check_model(data, full_check=True)
        except Exception as exc:
            raise VerificationError(f"checker: {first_line(exc)}") from None
        _check_shapes(model, source)
        check_finite_weights(model, source)
        try:
            outputs = run(data, feeds)
        except Exception as exc:
            raise VerificationError(f"onnxruntime: {first_line(exc)}") from None
    check_finite_outputs(outputs, reference or {})
    return outputs


def _check_shapes(model: ModelProto, source: ModelProto | None) -> None:
    """Strict shape inference, unless the source model fails it too (an op whose output
    type onnx cannot infer, such as GroupNormalization-21): then the checker and the
    onnxruntime run are the shape checks."""
    try:
        onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True, data_prop=True)
    except Exception as exc:
        if source is None or _infers_strictly(source):
            raise VerificationError(f"shape inference: {first_line(exc)}") from None


def _infers_strictly(model: ModelProto) -> bool:
    try:
        onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True, data_prop=True)
    except Exception:
        return False
    return True


def reference_model(dep: DepGraph, removed_units: dict[int, np.ndarray],
                    original: ModelProto, applied: dict[int, np.ndarray] | None = None
                    ) -> ModelProto:
    """The original model with the removed units zeroed at their consumers (and the
    `applied` units already removed, as the pruned model removes them)."""
    slots = removed_slots(dep, applied) if applied else None
    return export(mask_sinks(dep, removed_units, slots), original)


# Relative L2 error allowed, per float output, between a model with hidden groups cut
# and the original with every cut unit zeroed at its consumers. Only the statistics of
# the normalizations over the hidden axis differ between the two: 0.05-0.33 measured
# for 25-75 % of a 16-wide decomposed LayerNorm, 0.10-0.17 for 25-50 % of ConvNeXt's
# hidden sizes; a member sliced at the wrong indices gave 0.76-0.93. A cut that moves
# the masked original itself far from the dense model moves the statistics further
# (Magika at --hidden-ratio 0.75: 0.66 from the masked original, which is 0.79 from the
# dense model), so the bound is also never below that distance.
HIDDEN_TOLERANCE = 0.5


def check_pruned(pruned: ModelProto, reference: ModelProto | None,
                 feeds: dict[str, np.ndarray], approximate: ModelProto | None = None,
                 source: ModelProto | None = None) -> None:
    """Written-model invariants (non-finite weights only where `source`, the model it
    was made from, has them); then equal outputs to the masked `reference` (skipped
    when None) and, when hidden groups were cut, outputs within `HIDDEN_TOLERANCE` of
    `approximate`, the original with every cut masked."""
    want = run_source(reference, feeds) if reference is not None else None
    bounded = run_source(approximate, feeds) if approximate is not None else None
    got = check_written(pruned, feeds, want or bounded, source or reference)
    if want is not None:
        _compare(got, want, None, "the original with the removed channels zeroed at "
                 "their consumers")
    if bounded is not None:
        _compare(got, bounded, hidden_bounds(bounded, run_source(source, feeds) if source
                                             else {}),
                 "the original with the removed channels zeroed at their consumers, beyond "
                 "the bound for cuts of hidden sizes")


def hidden_bounds(masked: dict[str, np.ndarray], dense: dict[str, np.ndarray]
                  ) -> dict[str, float]:
    """Per output: `HIDDEN_TOLERANCE`, or the masked original's distance from the dense
    model when larger."""
    return {name: max(HIDDEN_TOLERANCE, relative_error(dense[name], value)
                      if name in dense and dense[name].shape == value.shape else 0.0)
            for name, value in masked.items()}


def _compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray],
             tol: dict[str, float] | None, what: str) -> None:
    """Refuse float outputs of another shape, or farther from `want` than `tol` per
    output (None: equal up to rounding, 1e-3 relative, 2e-2 in float16)."""
    for name, expected in want.items():
        if not np.issubdtype(expected.dtype, np.floating):
            continue
        if got[name].shape != expected.shape:
            raise VerificationError(f"output {name!r} has shape {got[name].shape}, expected "
                                    f"{expected.shape}")
        bound = tol[name] if tol is not None else 2e-2 if expected.dtype == np.float16 \
            else 1e-3
        if not outputs_close(expected, got[name], bound):
            raise VerificationError(
                f"output {name!r} differs from the reference ({what}): relative error "
                f"{relative_error(expected, got[name]):.2e}")


def check_plan(pruned: ModelProto, dep: DepGraph, removed_units: dict[int, np.ndarray],
               original: ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Channel cuts must be exact: the pruned model equals the original with the hidden
    cuts applied and the other removed units zeroed at their consumers, so any error is
    the channel rewrite's. Hidden cuts change normalization statistics, so they are held
    to `HIDDEN_TOLERANCE` against the original with every cut masked."""
    hidden = {g: units for g, units in removed_units.items() if dep.groups[g].approximate}
    exact = {g: units for g, units in removed_units.items() if g not in hidden}
    reference = reference_model(dep, exact, original, hidden) if exact or not hidden \
        else None
    bounded = reference_model(dep, removed_units, original) if hidden else None
    check_pruned(pruned, reference, feeds, bounded, original)


def outputs_close(reference: np.ndarray, value: np.ndarray, tol: float,
                  atol: float = 1e-6) -> bool:
    """‖value − reference‖ ≤ tol·‖reference‖ + atol·√n (robust for all-zero outputs)."""
    reference = np.asarray(reference, np.float64)
    diff = np.linalg.norm(np.asarray(value, np.float64) - reference)
    return bool(diff <= tol * np.linalg.norm(reference) + atol * np.sqrt(reference.size))


def relative_error(reference: np.ndarray, value: np.ndarray) -> float:
    """‖value − reference‖ / max(‖reference‖, tiny)."""
    reference = np.asarray(reference, np.float64)
    value = np.asarray(value, np.float64)
    scale = max(float(np.linalg.norm(reference)), 1e-30)
    return float(np.linalg.norm(value - reference) / scale)
