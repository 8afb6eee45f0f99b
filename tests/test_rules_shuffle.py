"""Channel shuffle (Reshape [N, C, H, W] → [N, g, C/g, H, W], Transpose of the two
factors, Reshape back): a permutation of single channels. Any channels may go; the
splitting Reshape then keeps them all on its last factor and the Transpose becomes a
Gather of the kept ones."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    GraphBuilder,
    analyze,
    assert_mask_equivalent,
    build_typed,
    groups_on,
    node_input_values,
    prunable,
    prune_all,
    weight_shapes,
)

from onnxprune.depgraph import Slot

HW = 4


def only_group(dep, tensor: str, axis: int = 1):
    groups = groups_on(dep, tensor, axis)
    assert len(groups) == 1, [(g.id, g.units) for g in groups]
    return groups[0]


def shuffled(c: int, g: int) -> np.ndarray:
    """Position after the shuffle of each channel: c = i·(C/g) + j goes to j·g + i."""
    i, j = np.divmod(np.arange(c), c // g)
    return j * g + i


def shuffle(b: GraphBuilder, x: str, c: int, g: int) -> str:
    r1 = b.op("Reshape", [x, b.const(np.array([1, g, c // g, HW, HW], np.int64))])
    t = b.op("Transpose", [r1], perm=[0, 2, 1, 3, 4])
    return b.op("Reshape", [t, b.const(np.array([1, c, HW, HW], np.int64))])


def concat_of_convs(b: GraphBuilder, x: str, g: int, per: int) -> tuple[list[str], str]:
    parts = [b.conv(x, 3, per) for _ in range(g)]
    return parts, b.op("Concat", parts, axis=1)


@pytest.mark.parametrize("g", [2, 3])
def test_shuffle_maps_each_channel_to_its_shuffled_position(g):
    b = GraphBuilder()
    x = b.input("x", [1, 3, HW, HW])
    per = 4
    parts, cat = concat_of_convs(b, x, g, per)
    y = shuffle(b, cat, g * per, g)
    model = b.build(b.conv(y, g * per, 5))
    dep = analyze(model)
    assert len(prunable(dep)) == g  # every branch (the last conv's outputs are the output)
    positions = shuffled(g * per, g)
    for k, part in enumerate(parts):
        group = only_group(dep, part)
        assert group.units == per and group.channels_per_unit == 1
        owner = group.members[Slot(y, 1)]
        assert np.array_equal(np.flatnonzero(owner >= 0), np.sort(positions[k * per:][:per]))
        assert np.array_equal(owner[positions[k * per:][:per]], np.arange(per))


def test_pruning_any_channels_of_a_shuffle_rewrites_targets_and_gathers():
    b = GraphBuilder()
    x = b.input("x", [1, 3, HW, HW])
    (a, c), cat = concat_of_convs(b, x, 2, 6)
    y = shuffle(b, cat, 12, 2)
    wy = b.weight(5, 12, 3, 3)
    model = b.build(b.op("Conv", [y, wy], pads=[1, 1, 1, 1]))
    dep = analyze(model)
    first, second = only_group(dep, a), only_group(dep, c)
    # unequal counts from the two branches: no factor grid [2, C'/2] holds them
    _, pruned = assert_mask_equivalent(model, {first.id: [0, 3, 4], second.id: [5]})
    ops = [n.op_type for n in pruned.graph.node]
    assert "Transpose" not in ops and ops.count("Gather") == 1
    assert node_input_values(pruned, "Reshape", 1, 0).tolist() == [1, 1, 8, HW, HW]
    assert node_input_values(pruned, "Reshape", 1, 1).tolist() == [1, 8, HW, HW]
    removed = np.sort(shuffled(12, 2)[[0, 3, 4, 6 + 5]])
    kept = np.delete(np.arange(12), removed)
    assert weight_shapes(pruned)[wy] == (5, 8, 3, 3)
    assert np.array_equal(node_input_values(pruned, "Conv", 1, 2),
                          node_input_values(model, "Conv", 1, 2)[:, kept])


def chunk(b: GraphBuilder, x: str) -> tuple[str, str]:
    """torch.chunk(x, 2, dim=1) as exported: bounds computed from Shape(x)."""
    size = b.op("Gather", [b.op("Shape", [x]), b.const(np.array([1], np.int64))], axis=0)
    half = b.op("Div", [b.op("Add", [size, b.const(np.array([1], np.int64))]),
                        b.const(np.array([2], np.int64))])
    one = b.op("Mul", [half, b.const(np.array([1], np.int64))])
    two = b.op("Mul", [half, b.const(np.array([2], np.int64))])
    axis = b.const(np.array([1], np.int64))
    first = b.op("Slice", [x, b.const(np.array([0], np.int64)), one, axis])
    return first, b.op("Slice", [x, one, two, axis])


def exported_shuffle(b: GraphBuilder, x: str, g: int) -> str:
    """The shuffle with targets computed at run time from Shape, as torch exports it."""

    def entry(tensor: str, axis: int, divide: int = 1) -> str:
        value = b.op("Gather", [b.op("Shape", [tensor]), b.const(np.array(axis, np.int64))],
                     axis=0)
        if divide > 1:
            value = b.op("Div", [value, b.const(np.array(divide, np.int64))])
        return b.op("Unsqueeze", [value, b.const(np.array([0], np.int64))])

    split = b.op("Concat", [entry(x, 0), b.const(np.array([g], np.int64)), entry(x, 1, g),
                            entry(x, 2), entry(x, 3)], axis=0)
    t = b.op("Transpose", [b.op("Reshape", [x, split])], perm=[0, 2, 1, 3, 4])
    merge = b.op("Concat", [entry(x, 0), entry(x, 1), entry(x, 2), entry(x, 3)], axis=0)
    return b.op("Reshape", [t, merge])


def test_shufflenet_v2_blocks_as_exported_prune_every_group_exactly():
    """Two ShuffleNet v2 units: chunk, a branch on the second half, concat, shuffle."""
    b = GraphBuilder(opset=17)
    x = b.input("x", [1, 3, HW, HW])
    y = b.conv(x, 3, 16)
    for _ in range(2):
        keep, work = chunk(b, y)
        branch = b.op("Relu", [b.conv(b.op("Relu", [b.conv(work, 8, 8, k=1)]), 8, 8, k=1)])
        y = exported_shuffle(b, b.op("Concat", [keep, branch], axis=1), 2)
    model = build_typed(b, b.conv(y, 16, 4, k=1), output_shape=[1, 4, HW, HW])
    dep = analyze(model)
    channels = [g for g in dep.groups if not any("graph output" in r for r in g.blocked)]
    assert len(channels) == 8 and all(g.prunable for g in channels), [g.blocked for g in channels]
    _, pruned = prune_all(model, 0.5)
    ops = [n.op_type for n in pruned.graph.node]
    assert ops.count("Transpose") == 0 and ops.count("Gather") >= 2
    slices = [n for n in pruned.graph.node if n.op_type == "Slice"]
    initializers = {t.name for t in pruned.graph.initializer}
    assert all(n.input[1] in initializers and n.input[2] in initializers for n in slices)


def test_a_shuffle_read_elsewhere_goes_by_columns_of_its_factor_grid():
    """The transposed tensor has a second reader: the factors are not followed as one,
    the inner factor (a column of the [g, C/g] grid) carries the units."""
    b = GraphBuilder()
    x = b.input("x", [1, 3, HW, HW])
    _, cat = concat_of_convs(b, x, 2, 4)
    r1 = b.op("Reshape", [cat, b.const(np.array([1, 2, 4, HW, HW], np.int64))])
    t = b.op("Transpose", [r1], perm=[0, 2, 1, 3, 4])
    y = b.op("Reshape", [t, b.const(np.array([1, 8, HW, HW], np.int64))])
    side = b.op("ReduceMean", [t], axes=[2], keepdims=0)  # [1, 4, HW, HW]: mixes the g axis
    model = b.build([b.conv(y, 8, 5), b.conv(side, 4, 5)])
    dep = analyze(model)
    group = only_group(dep, cat)
    assert group.prunable and group.units == 4
    assert np.array_equal(group.members[Slot(cat, 1)], np.tile(np.arange(4), 2))
    _, pruned = assert_mask_equivalent(model, {group.id: [1, 2]})
    assert node_input_values(pruned, "Reshape", 1, 0).tolist() == [1, 2, 2, HW, HW]
    assert "Transpose" in [n.op_type for n in pruned.graph.node]


def test_inspect_json_names_the_span_of_a_shuffled_slot(tmp_path):
    import json

    import onnx
    from click.testing import CliRunner

    from onnxprune.cli import main

    b = GraphBuilder()
    x = b.input("x", [1, 3, HW, HW])
    _, cat = concat_of_convs(b, x, 2, 4)
    path = tmp_path / "m.onnx"
    onnx.save(b.build(b.conv(shuffle(b, cat, 8, 2), 8, 5)), str(path))
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    spans = [m for g in json.loads(result.output) for m in g["members"] if "span" in m]
    assert spans and all(m["span"] == 2 and m["axis"] == 1 for m in spans)
