"""Running models in onnxruntime: seeded sample inputs, the outputs of one run, a run
of a model a command was given, and the part of a model that computes some tensors."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import ModelProto

from ..errors import ModelError, first_line
from ..shapes import input_specs
from ..targets.onnxruntime import foreign_op, runtime_failure, session


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
        if foreign_op(model):
            raise ModelError(runtime_failure(exc, model)) from None
        shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feeds.items())
        raise ModelError(f"the model does not run on sample inputs ({shapes}): "
                         f"{first_line(exc)}; give the right shapes with --input-shape"
                         ) from None


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
    read = _all_read(model.graph, needed)
    graph = onnx.helper.make_graph(
        [n for n in model.graph.node if id(n) in needed], model.graph.name,
        list(model.graph.input), [onnx.ValueInfoProto(name=n) for n in outputs],
        [t for t in model.graph.initializer if t.name in read])
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
