"""`snip` for sparsify (the `train` extra): the gradient of the loss of
`train/saliency.py`, summed over the calibration samples, with respect to each layer's
weight as the layer reads it (through its views), from the JAX translation checked
against onnxruntime on the first calibration batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from onnx import ModelProto

from ..train import check_translation
from ..train.saliency import edge_gradients, per_sample
from .layers import Layer, WeightStore, effective

Edge = tuple[str, str]


def layer_edge(model: ModelProto, layer: Layer) -> Edge:
    """The edge on which the layer's node reads its weight."""
    for node in model.graph.node:
        if node.name == layer.node and node.op_type == layer.op \
                and layer.input_index < len(node.input) \
                and node.input[1 - layer.input_index] == layer.activation:
            return node.output[0], node.input[layer.input_index]
    raise KeyError(layer.node)


def weight_gradients(model: ModelProto, layers: list[Layer],
                     stream: Callable[[], Iterator[dict]], seed: int,
                     labels: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Per layer (by id): ∂L/∂W of the weight the layer reads, L summed over samples
    (`labels`: the calibration data's class labels, for a supervised loss)."""
    translated = check_translation(model, next(iter(stream())))[0]
    store = WeightStore(model)
    edges = {id(layer): layer_edge(model, layer) for layer in layers}
    shapes = {edges[id(layer)]: effective(layer, store).shape for layer in layers}
    grads = edge_gradients(translated, stream(), shapes, seed, per_sample(model), labels)
    return {key: grads[edge] for key, edge in edges.items()}
