"""Planning options, criteria and model I/O through the Python API."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import GraphBuilder, analyze, prunable
from model_files import zoo_model

import onnxprune
from onnxprune import model as model_io
from onnxprune.errors import InputError
from onnxprune.planning import criterion_names


def chain(widths=(32, 24, 40), seed=0):
    b = GraphBuilder(seed=seed)
    x = b.input("x", [1, 3, 8, 8])
    c_in = 3
    for w in widths:
        x = b.op("Relu", [b.bn(b.conv(x, c_in, w), w)])
        c_in = w
    return b, b.build(b.conv(x, c_in, 4))


def kept(report):
    return {g.id: g.kept for g in report.groups if not g.blocked}


def test_ratio_removes_that_fraction_rounded():
    _, model = chain()
    _, report = onnxprune.prune(model, 0.5, round_to=8)
    assert sorted(kept(report).values()) == [16, 16, 24]
    _, report = onnxprune.prune(model, 0.5, round_to=1)
    assert sorted(kept(report).values()) == [12, 16, 20]


def test_fragments_smaller_than_the_rounding_step_still_lose_channels():
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 8, 8])
    small = b.op("Relu", [b.conv(x, 3, 8)])  # a whole layer of 8: kept whole at 16
    h = b.op("Relu", [b.conv(small, 8, 40)])
    parts = b.op("Split", [h, b.const(np.array([6, 12, 22], np.int64))], n_out=3, axis=1)
    model = b.build([b.conv(part, c, 4) for part, c in zip(parts, (6, 12, 22), strict=True)])
    _, report = onnxprune.prune(model, 0.5)
    # Each part is a fragment of the 40 channels of one conv: 6 and 12 step by 2 and
    # 4 (the largest halvings of 16 that fit twice), 22 by 16.
    assert sorted((g.size, g.kept) for g in report.groups if not g.blocked) == [
        (6, 4), (8, 8), (12, 8), (22, 16)]


def test_min_channels_and_zero_ratio():
    _, model = chain()
    _, report = onnxprune.prune(model, 0.9, round_to=1, min_channels=10)
    assert min(kept(report).values()) == 10
    _, report = onnxprune.prune(model, 0.0)
    assert report.macs_after == report.macs_before


def test_ignore_by_name_op_and_regex():
    b, model = chain()
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    _, report = onnxprune.prune(model, 0.5, ignore=(first_conv,))
    ignored = [g for g in report.groups if g.skipped and "ignored" in g.skipped]
    assert len(ignored) == 1 and first_conv in ignored[0].producers
    _, report = onnxprune.prune(model, 0.5, ignore=("Conv",))
    assert all(g.kept == g.size for g in report.groups)
    _, report = onnxprune.prune(model, 0.5, ignore=("Conv.*",))
    assert all(g.kept == g.size for g in report.groups)
    with pytest.raises(InputError):
        onnxprune.prune(model, 0.5, ignore=("(",))


def test_target_macs_is_met_and_close():
    model = zoo_model("resnet18")
    _, report = onnxprune.prune(model, target_macs=0.5)
    fraction = report.macs_after / report.macs_before
    assert 0.4 <= fraction <= 0.5


def test_target_macs_out_of_reach_is_a_clear_error():
    _, model = chain()
    with pytest.raises(InputError, match="cannot be reached"):
        onnxprune.prune(model, target_macs=0.001)


def test_global_ranking_cuts_unevenly_but_meets_the_ratio():
    b = GraphBuilder(seed=1)
    x = b.input("x", [1, 3, 8, 8])
    h1 = b.op("Relu", [b.conv(x, 3, 32)])
    h2 = b.op("Relu", [b.conv(h1, 32, 32)])
    model = b.build(b.conv(h2, 32, 4))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    w1 = next(n.input[1] for n in model.graph.node if n.op_type == "Conv")
    scaled = weights[w1] * 10
    for t in model.graph.initializer:
        if t.name == w1:
            t.CopyFrom(onnx.numpy_helper.from_array(scaled, w1))
    _, report = onnxprune.prune(model, 0.5, global_ranking=True, round_to=1, max_ratio=0.9)
    cuts = sorted(g.size - g.kept for g in report.groups if not g.blocked)
    assert sum(cuts) == 32 and cuts[0] < cuts[1]


def chain_with_dead_halves():
    """`chain()` whose every consumer reads nothing from the even channels it gets: each
    group has half its units dead (32, 24 and 40 wide: 16, 12 and 20 dead)."""
    b, model = chain()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    consumers = {n.input[1] for n in convs[1:]}
    for tensor in model.graph.initializer:
        if tensor.name in consumers:
            values = onnx.numpy_helper.to_array(tensor).copy()
            values[:, ::2] = 0
            tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
    return model


@pytest.mark.parametrize("criterion", sorted(criterion_names()))
def test_every_criterion_prunes_a_valid_model(criterion):
    model = chain_with_dead_halves()
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    pruned, report = onnxprune.prune(model, 0.5, criterion=criterion, calib=calib,
                                     round_to=8)
    onnx.checker.check_model(pruned, full_check=True)
    assert report.criterion == criterion
    groups = sorted((g for g in report.groups if not g.blocked), key=lambda g: g.size)
    assert [g.size for g in groups] == [24, 32, 40]
    uniform = onnxprune.prune(model, 0.5, round_to=8)[1]
    if criterion == "sensitivity":  # its own ratio per group, within the uniform budget
        assert report.macs_after <= uniform.macs_after and any(g.removed for g in groups)
    else:  # zero: the dead units, as many as the rounding allows
        assert [g.kept for g in groups] == [16, 16, 24]
        assert report.macs_after == uniform.macs_after
    if criterion == "zero":  # only dead units go, so nothing changes
        assert all(u % 2 == 0 for g in groups for u in g.removed)
        feeds = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
        from onnxprune.verify import relative_error, run

        before, after = run(model, feeds), run(pruned, feeds)
        assert all(relative_error(before[k], after[k]) < 1e-6 for k in before)


def _model_with_dead_channels():
    b = GraphBuilder(seed=2)
    x = b.input("x", [1, 3, 8, 8])
    w1, bias = b.weight(16, 3, 3, 3), b.weight(16)
    h = b.op("Relu", [b.op("Conv", [x, w1, bias], pads=[1, 1, 1, 1])])
    w2 = b.weight(4, 16, 3, 3)
    y = b.op("Conv", [h, w2], pads=[1, 1, 1, 1])
    model = b.build(y)
    arrays = {t.name: onnx.numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    arrays[w2][:, [1, 5, 9, 13]] = 0  # consumer slices of four channels are zero
    arrays[w1][[2, 6]] = 0
    arrays[bias][[2, 6]] = 0  # two channels produce exact zeros through Relu
    for t in model.graph.initializer:
        t.CopyFrom(onnx.numpy_helper.from_array(arrays[t.name], t.name))
    return model


def test_zero_criterion_removes_exactly_the_dead_channels_losslessly():
    model = _model_with_dead_channels()
    pruned, report = onnxprune.prune(model, 0.0, criterion="zero", round_to=1)
    group = next(g for g in report.groups if not g.blocked)
    assert group.removed == [1, 2, 5, 6, 9, 13]
    from onnxprune.verify import relative_error, run, sample_feeds

    feeds = sample_feeds(model, {"x": (1, 3, 8, 8)})
    before, after = run(model, feeds), run(pruned, feeds)
    for name in before:
        assert relative_error(before[name], after[name]) < 1e-6


def test_bn_scale_removes_the_smallest_gammas():
    b = GraphBuilder(seed=3)
    x = b.input("x", [1, 3, 8, 8])
    gamma = np.linspace(0.1, 1.6, 16).astype(np.float32)[::-1].copy()
    conv = b.conv(x, 3, 16)
    h = b.op("BatchNormalization", [conv, b.const(gamma), b.weight(16), b.weight(16),
                                    b.weight(16, positive=True)])
    model = b.build(b.conv(b.op("Relu", [h]), 16, 4))
    _, report = onnxprune.prune(model, 0.25, criterion="bn_scale", round_to=1)
    group = next(g for g in report.groups if not g.blocked)
    assert group.removed == [12, 13, 14, 15]


def test_l1_and_l2_remove_the_weakest_filters():
    b = GraphBuilder(seed=4)
    x = b.input("x", [1, 3, 8, 8])
    w = (np.ones((8, 3, 3, 3)) * np.arange(1, 9)[:, None, None, None]).astype(np.float32)
    w2 = np.ones((2, 8, 1, 1), np.float32)
    h = b.op("Relu", [b.op("Conv", [x, b.const(w)], pads=[1, 1, 1, 1])])
    model = b.build(b.op("Conv", [h, b.const(w2)]))
    for criterion in ("l1", "l2"):
        _, report = onnxprune.prune(model, 0.5, criterion=criterion, round_to=1)
        assert next(g for g in report.groups if not g.blocked).removed == [0, 1, 2, 3]


def test_random_criterion_is_seeded():
    _, model = chain()
    runs = [onnxprune.prune(model, 0.5, criterion="random", seed=s, round_to=1)[1]
            for s in (7, 7, 8)]
    removed = [[g.removed for g in r.groups] for r in runs]
    assert removed[0] == removed[1] != removed[2]


def test_metadata_opsets_and_io_are_kept():
    _, model = chain()
    onnx.helper.set_model_props(model, {"author": "me", "license": "x"})
    model.producer_name = "exporter"
    pruned, _ = onnxprune.prune(model, 0.5)
    assert {p.key: p.value for p in pruned.metadata_props} == {"author": "me", "license": "x"}
    assert pruned.producer_name == "exporter"
    assert [(o.domain, o.version) for o in pruned.opset_import] == [
        (o.domain, o.version) for o in model.opset_import]
    assert pruned.graph.input[0] == model.graph.input[0]


def test_float16_weights_prune():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8], onnx.TensorProto.FLOAT16)
    w1 = b.const(b.rng.standard_normal((16, 3, 3, 3)).astype(np.float16))
    w2 = b.const(b.rng.standard_normal((4, 16, 3, 3)).astype(np.float16))
    h = b.op("Relu", [b.op("Conv", [x, w1], pads=[1, 1, 1, 1])])
    y = b.op("Conv", [h, w2], pads=[1, 1, 1, 1])
    graph = onnx.helper.make_graph(b.nodes, "fp16", b.inputs, [
        onnx.helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT16, [1, 4, 8, 8])],
        b.inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    pruned, report = onnxprune.prune(model, 0.5, round_to=8)
    sizes = [tuple(t.dims) for t in pruned.graph.initializer]
    assert (8, 3, 3, 3) in sizes and all(t.data_type == onnx.TensorProto.FLOAT16
                                         for t in pruned.graph.initializer)


def test_large_models_are_saved_with_external_data(tmp_path, monkeypatch):
    _, model = chain()
    monkeypatch.setattr(model_io, "EXTERNAL_DATA_THRESHOLD", 100)
    path = tmp_path / "m.onnx"
    model_io.save(model, path)
    assert (tmp_path / "m.onnx.data").exists()
    loaded = model_io.load(path)
    pruned, _ = onnxprune.prune(loaded, 0.5)
    model_io.save(pruned, tmp_path / "p.onnx")
    assert (tmp_path / "p.onnx.data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data", "p.onnx",
                                                          "p.onnx.data"]


def test_inspect_returns_groups():
    _, model = chain()
    groups = onnxprune.inspect(model)
    assert sorted(g.units for g in groups if g.prunable) == [24, 32, 40]
    assert len(prunable(analyze(model))) == 3


def test_structure_only_file_is_refused_with_advice(tmp_path):
    path = tmp_path / "s.onnx"
    onnx.save(onnx.load("models/zoo/resnet18.onnx"), str(path))
    with pytest.raises(InputError, match="structure-only"):
        onnxprune.prune(str(path), 0.5)


def test_cost_model_per_node_before_and_after():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    h = b.op("Relu", [b.conv(x, 3, 32)])
    flat = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    model = b.build(b.op("Gemm", [flat, b.weight(10, 32), b.weight(10)], transB=1))
    _, report = onnxprune.prune(model, 0.5, round_to=1)
    rows = {row["op"]: row for row in report.nodes}
    assert rows["Conv"]["macs_before"] == 32 * 8 * 8 * 3 * 9
    assert rows["Conv"]["macs_after"] == 16 * 8 * 8 * 3 * 9
    assert rows["Conv"]["params_before"] == 32 * 27 + 32
    assert rows["Gemm"]["macs_before"] == 320 and rows["Gemm"]["macs_after"] == 160
    assert report.macs_before == 32 * 8 * 8 * 27 + 320
    assert report.params_after == 16 * 27 + 16 + 160 + 10


def test_recurrent_macs_are_counted():
    b = GraphBuilder()
    x = b.input("x", [5, 1, 16])
    w, r = b.weight(1, 4 * 8, 16), b.weight(1, 4 * 8, 8)
    y = b.op("LSTM", [x, w, r], n_out=3, hidden_size=8)[0]
    model = b.build(y)
    _, report = onnxprune.prune(model, 0.0)
    assert report.macs_before == 5 * 1 * 32 * (16 + 8)


def test_a_wrong_rewrite_is_caught_by_the_reference_check(monkeypatch):
    """Break the Concat offsets: the model stays valid but computes something else."""
    from onnxprune.ops import concat_split

    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    a, c = b.conv(x, 3, 16), b.conv(x, 3, 16)
    model = b.build(b.conv(b.op("Concat", [a, c], axis=1), 32, 4))
    monkeypatch.setattr(concat_split, "_offsets", lambda names, axis, view: [0] * len(names))
    with pytest.raises(onnxprune.VerificationError, match="differs from the reference") as err:
        onnxprune.prune(model, 0.5, round_to=1)
    assert "group" in str(err.value) and "nothing was written" in str(err.value)


def test_inspect_accepts_structure_only_files():
    groups = onnxprune.inspect("models/zoo/resnet18.onnx")
    assert sum(g.prunable for g in groups) == 12


def test_a_model_that_needs_other_input_shapes_says_so():
    b = GraphBuilder()
    x = b.input("x", [1, 3, "h", "w"])
    h = b.op("Relu", [b.conv(x, 3, 32)])
    y = b.op("Reshape", [b.conv(h, 32, 4), b.const(np.array([1, 4, 30, 30], np.int64))])
    model = b.build(y)
    with pytest.raises(onnxprune.ModelError, match="--input-shape"):
        onnxprune.prune(model, 0.5)
    pruned, _ = onnxprune.prune(model, 0.5, input_shapes={"x": (1, 3, 30, 30)})
    assert pruned.graph.output[0].name == y


def test_ratio_zero_keeps_groups_that_are_not_multiples_of_the_rounding():
    b = GraphBuilder()
    x = b.input("x", [1, 3, 8, 8])
    model = b.build(b.conv(b.op("Relu", [b.conv(x, 3, 18)]), 18, 4))
    _, report = onnxprune.prune(model, 0.0)
    assert all(g.kept == g.size for g in report.groups)
    _, report = onnxprune.prune(model, 0.1)  # 16.2 kept → rounded to 16
    assert next(g for g in report.groups if not g.blocked).kept == 16
