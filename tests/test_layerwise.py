"""The layer-wise walk (`layerwise.py`) and its running statistics (`moments.py`): levels in
topological order, statistics equal to a direct numpy computation, and new weights of one
level seen by the next level's current prefix but not by the dense one."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import GraphBuilder

from onnxprune.layerwise import changed_prefixes, levels, model_prefixes, walk
from onnxprune.moments import Moments


def test_levels_follow_the_longest_chain_of_layers():
    # a → b → d, c beside them; d reads b and c; e reads the input only
    nodes = [(["x"], ["a"], True), (["a"], ["r"], False), (["r"], ["b"], True),
             (["x"], ["c"], True), (["b", "c"], ["s"], False), (["s"], ["d"], True),
             (["x"], ["e"], True)]
    reads = {"A": ["x"], "B": ["r"], "C": ["x"], "D": ["s"], "E": ["x"]}
    found = levels(nodes, ["E", "D", "C", "B", "A"], reads.__getitem__)
    assert found == [["E", "C", "A"], ["B"], ["D"]]


def test_levels_of_independent_layers_are_one():
    nodes = [(["x"], [f"y{i}"], True) for i in range(4)]
    assert levels(nodes, [0, 1, 2, 3], lambda i: ["x"]) == [[0, 1, 2, 3]]


def two_layers():
    """x·W1 → Relu → ·W2: two levels."""
    b = GraphBuilder(seed=4)
    x = b.input("x", ["n", 6])
    w1 = b.weight(6, 5)
    hidden = b.op("Relu", [b.op("MatMul", [x, w1])])
    return b.build(b.op("MatMul", [hidden, b.weight(5, 3)])), w1, hidden


def batches(count=3, rows=4):
    rng = np.random.default_rng(5)
    data = [{"x": rng.standard_normal((rows, 6)).astype(np.float32)} for _ in range(count)]
    return lambda: iter(data)


def numpy_hidden(weight, feeds):
    return np.maximum(feeds["x"] @ weight, 0)


def test_walk_measures_current_and_dense_inputs_and_applies_new_weights():
    model, w1, hidden = two_layers()
    stream = batches()
    values: dict[str, np.ndarray] = {}
    new_w1 = np.full((6, 5), 0.1, np.float32)
    seen = []

    def add(moments, layer, current, dense, number):
        moments.add_rows(current[layer], True, dense[layer])

    def update(level, stats):
        seen.append((level, stats[id(level[0])]))
        values[w1] = new_w1  # the first level's new weights

    walk([["x"], [hidden]], stream, changed_prefixes(model, values), lambda name: name,
         lambda name: name, add, update)
    (first, at_input), (second, at_hidden) = seen
    assert first == ["x"] and second == [hidden]
    x = np.concatenate([feeds["x"] for feeds in stream()])
    assert at_input.count == len(x) == 12
    np.testing.assert_allclose(at_input.hessian, x.T @ x / 12, rtol=1e-5)
    dense_w1 = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer
                                               if t.name == w1))
    current = np.concatenate([numpy_hidden(new_w1, feeds) for feeds in stream()])
    dense = np.concatenate([numpy_hidden(dense_w1, feeds) for feeds in stream()])
    assert not np.allclose(current, dense)
    np.testing.assert_allclose(at_hidden.total_sq, (current ** 2).sum(0), rtol=1e-5)
    np.testing.assert_allclose(at_hidden.gram, current.T @ current, rtol=1e-5)
    np.testing.assert_allclose(at_hidden.cross_hessian, current.T @ dense / 12, rtol=1e-5,
                               atol=1e-6)


def test_layers_with_one_key_share_their_moments_and_graph_inputs_come_from_the_feeds():
    model, _, hidden = two_layers()
    stream, shared = batches(2, 3), []

    def add(moments, layer, current, dense, number):
        assert dense is None
        moments.add_rows(current[layer[0]])

    walk([[("x", 1), ("x", 2), (hidden, 3)]], stream, model_prefixes(model, None),
         lambda layer: layer[0], lambda layer: layer[0], add,
         lambda level, stats: shared.extend(stats[id(layer)] for layer in level))
    assert shared[0] is shared[1] and shared[2] is not shared[0]
    x = np.concatenate([feeds["x"] for feeds in stream()])
    assert shared[0].count == 6
    np.testing.assert_allclose(shared[0].total_sq, (x.astype(np.float64) ** 2).sum(0),
                               rtol=1e-6)


def test_channel_moments_equal_numpy():
    rng = np.random.default_rng(6)
    batches_ = [np.maximum(rng.standard_normal((2, 4, 3, 3)), 0) for _ in range(3)]
    moments = Moments()
    for batch in batches_:
        moments.add_channels(batch, 1)
    data = np.moveaxis(np.concatenate(batches_), 1, 0).reshape(4, -1)
    assert moments.count == data.shape[1] == 54
    np.testing.assert_allclose(moments.mean, data.mean(1))
    np.testing.assert_allclose(moments.mean_abs, np.abs(data).mean(1))
    np.testing.assert_allclose(moments.variance, data.var(1), atol=1e-12)
    np.testing.assert_allclose(moments.apoz, (data == 0).mean(1))


def test_cross_products_in_either_order_are_the_same_matrix():
    rng = np.random.default_rng(8)
    rows, dense = rng.standard_normal((50, 4)), rng.standard_normal((50, 3))
    one, other = Moments(), Moments()
    for start in (0, 25):
        one.add_rows(rows[start:start + 25], True, dense[start:start + 25])
        other.add_rows(rows[start:start + 25], True, dense[start:start + 25],
                       dense_first=True)
    assert one.cross.shape == other.cross.shape == (4, 3)
    np.testing.assert_allclose(one.cross, rows.T @ dense, rtol=1e-5)
    np.testing.assert_allclose(other.cross, one.cross, rtol=1e-5)
    np.testing.assert_allclose(one.hessian, rows.T @ rows / 50, rtol=1e-5)
