"""Op rules on small graphs, each checked against the mask-equivalence oracle."""

from helpers import GraphBuilder, analyze, assert_mask_equivalent, prunable, prune_all


def test_conv_bn_relu_chain_prunes_the_hidden_channels():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h = b.op("Relu", [b.bn(b.conv(x, 3, 16), 16)])
    y = b.conv(h, 16, 4)
    model = b.build(y)
    dep = analyze(model)
    groups = prunable(dep)
    assert [g.units for g in groups] == [16]
    _, pruned = assert_mask_equivalent(model, {groups[0].id: [0, 3, 5]})
    shapes = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert sorted(s for s in shapes.values() if len(s) == 4) == [(4, 13, 3, 3), (13, 3, 3, 3)]


def test_graph_output_blocks_its_group():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    y = b.conv(x, 3, 8)
    dep = analyze(b.build(y))
    assert len(dep.groups) == 1
    assert "graph output" in dep.groups[0].blocked[0]


def test_unknown_op_blocks_and_names_the_op():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h = b.op("DepthToSpace", [b.conv(x, 3, 8)], blocksize=2)
    y = b.conv(h, 2, 4)
    dep = analyze(b.build(y))
    blocked = [g for g in dep.groups if g.blocked]
    assert any("DepthToSpace" in g.blocked[0] and "no rule" in g.blocked[0] for g in blocked)


def test_residual_add_couples_both_branches():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    a = b.op("Relu", [b.conv(x, 3, 8)])
    c = b.conv(b.op("Relu", [b.conv(a, 8, 6)]), 6, 8)
    s = b.op("Add", [a, c])
    model = b.build(b.conv(s, 8, 2))
    dep = analyze(model)
    assert sorted(g.units for g in prunable(dep)) == [6, 8]
    prune_all(model)
