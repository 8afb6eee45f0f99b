"""Random graphs (CNN-like, transformer-like, and CNNs that turn into sequences): any
choice of units from any exact prunable groups must leave the pruned model equal to the
original with those channels masked at their consumers; cutting approximate (hidden)
groups as well must leave a valid model with the original outputs' names and shapes;
and every axis a drawn op mixes must be blocked or approximate, with a stated reason."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers import analyze, assert_mask_equivalent, prune_units, weight_shapes
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from property_cnn import CNN_BLOCKS, head, stem, tap
from property_graphs import Net
from property_mixing import MIXING_BLOCKS
from property_seq import SEQ_BLOCKS, seq_head, seq_stem, to_sequence
from property_spatial import SPATIAL_BLOCKS

from onnxprune.depgraph import Slot
from onnxprune.shapes import sample_shapes
from onnxprune.verify import check_written, run, sample_feeds

pytestmark = pytest.mark.property

OPSETS = [13, 17, 18, 21]
BLOCKS = {**CNN_BLOCKS, **MIXING_BLOCKS, **SPATIAL_BLOCKS}


def examples(count: int):
    return settings(max_examples=count, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def draw_names(net: Net, blocks: dict, depth: tuple[int, int], forced: str | None) -> list:
    """Block names for a stretch of the graph; `forced` is put in at a drawn place."""
    names = [net.pick(sorted(blocks), "block")
             for _ in range(net.draw(st.integers(*depth), "depth"))]
    if forced in blocks:
        names.insert(net.draw(st.integers(0, len(names)), "forced at"), forced)
    net.used += names
    return names


def draw_cnn(data: st.DataObject, forced: str | None = None) -> Net:
    """Stem, 2 to 6 blocks (with an extra output now and then), then a head, or a
    conversion to a sequence, sequence blocks and a sequence head."""
    net = Net(data, opset=data.draw(st.sampled_from(OPSETS), "opset"))
    stem(net)
    for name in draw_names(net, BLOCKS, (2, 6) if forced is None else (0, 2), forced):
        BLOCKS[name](net)
        if net.draw(st.integers(0, 9), "tap") == 0:
            tap(net)
    if forced == "to_sequence" or net.draw(st.integers(0, 3), "then a sequence") == 0:
        to_sequence(net)
        net.used.append("to_sequence")
        for name in draw_names(net, SEQ_BLOCKS, (1, 2), None):
            SEQ_BLOCKS[name](net)
        seq_head(net)
    else:
        head(net)
    return net


def draw_seq(data: st.DataObject, forced: str | None = None) -> Net:
    """Token features through 1 to 4 sequence blocks; one or two sequence heads."""
    net = Net(data, opset=data.draw(st.sampled_from(OPSETS), "opset"))
    seq_stem(net)
    for name in draw_names(net, SEQ_BLOCKS, (1, 2) if forced is None else (0, 1), forced):
        SEQ_BLOCKS[name](net)
    if net.flag("two outputs"):
        seq_head(net)
    for name in draw_names(net, SEQ_BLOCKS, (0, 2) if forced is None else (0, 1), None):
        SEQ_BLOCKS[name](net)
    seq_head(net)
    return net


def holders(dep, tensor: str, axis: int) -> list:
    slot = Slot(tensor, axis)
    return [g for g in dep.groups if slot in g.members and (g.members[slot] >= 0).any()]


def check_analysis(dep, net: Net) -> None:
    """Reasons are stated, `hidden` means approximate, and the expectations hold."""
    for group in dep.groups:
        assert all(isinstance(r, str) and r.strip() for r in group.blocked + group.approximate)
        assert (group.kind == "hidden") == bool(group.approximate), (group.kind, group.id)
    for expect in net.expects:
        found = holders(dep, expect.tensor, expect.axis)
        if expect.status == "exact":
            assert len(found) == 1, (expect, [(g.units, g.blocked) for g in found])
            group = found[0]
            assert group.prunable and not group.approximate, (expect, group.blocked,
                                                              group.approximate)
            assert group.units == expect.units, (expect, group.units)
            assert expect.kind in (None, group.kind), (expect, group.kind)
        for group in found:
            if expect.status == "blocked":
                assert group.blocked, (expect, group.kind, group.approximate)
            elif expect.status == "inexact":
                assert group.blocked or group.approximate, (expect, group.kind)


def candidates(dep) -> tuple[list, list]:
    """Prunable groups with a unit to spare: (exact, approximate)."""
    groups = [g for g in dep.groups if g.prunable and g.units > 1]
    return [g for g in groups if not g.approximate], [g for g in groups if g.approximate]


def draw_units(data: st.DataObject, groups: list, label: str) -> dict[int, np.ndarray]:
    """Some of the groups, and from each a non-empty, non-total set of units (drawn as
    bit masks: one draw each keeps big graphs within hypothesis's data budget)."""
    chosen = data.draw(st.integers(1, 2 ** len(groups) - 1), label + " groups")
    removed = {}
    for index, group in enumerate(groups):
        if chosen >> index & 1:
            mask = data.draw(st.integers(1, 2 ** group.units - 2), f"group {group.id} units")
            removed[group.id] = np.flatnonzero([mask >> u & 1 for u in range(group.units)])
    return removed


def weight_count(model) -> int:
    return sum(int(np.prod(s)) for s in weight_shapes(model).values())


def assert_valid_with_shapes(model, pruned) -> None:
    """Checker, strict shape inference and an onnxruntime run; same outputs and shapes."""
    feeds = sample_feeds(model, sample_shapes(model), seed=1)
    want, got = run(model, feeds), check_written(pruned, feeds)
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        assert np.isfinite(got[name]).all(), name


def io_signature(model) -> list:
    """Names and element types of the graph inputs and outputs."""
    return [(v.name, v.type.tensor_type.elem_type)
            for v in [*model.graph.input, *model.graph.output]]


def check_pruning(data: st.DataObject, net: Net) -> None:
    """Analyze a drawn graph, cut some units of its exact groups (mask-equivalent), then
    of its approximate groups too (valid, same outputs)."""
    note(f"blocks: {net.used}")
    model = net.finish()
    dep = analyze(model)
    check_analysis(dep, net)
    exact, approximate = candidates(dep)
    assume(exact or approximate)
    removed = draw_units(data, exact, "exact") if exact else {}
    if removed:
        _, pruned = assert_mask_equivalent(model, removed, tol=1e-4)
        assert weight_count(pruned) < weight_count(model)
        assert io_signature(pruned) == io_signature(model)
    if approximate:
        removed |= draw_units(data, approximate, "approximate")
        _, pruned, _ = prune_units(model, removed)
        assert_valid_with_shapes(model, pruned)
        assert weight_count(pruned) < weight_count(model)
        assert io_signature(pruned) == io_signature(model)


@examples(150)
@given(st.data())
def test_random_cnn_prunes_mask_equivalently(data):
    check_pruning(data, draw_cnn(data))


@examples(80)
@given(st.data())
def test_random_transformer_prunes_mask_equivalently(data):
    check_pruning(data, draw_seq(data))


@pytest.mark.parametrize("name", sorted([*BLOCKS, *SEQ_BLOCKS, "to_sequence"]))
@examples(4)
@given(data=st.data())
def test_every_block_prunes_mask_equivalently(name, data):
    """Each block in a few small graphs of its own (the free draws above favour some)."""
    check_pruning(data, draw_seq(data, name) if name in SEQ_BLOCKS else draw_cnn(data, name))


def tally_examples(draw, count: int) -> Counter:
    """Draw `count` derandomized graphs; count those with candidates, the blocks used,
    the kinds of the candidate groups and the examples with a blocked group."""
    tally: Counter = Counter()

    @examples(count)
    @given(st.data())
    def sample(data):
        net = draw(data)
        dep = analyze(net.finish())
        exact, approximate = candidates(dep)
        tally.update(["examples"] + ["candidates"] * bool(exact or approximate)
                     + ["exact"] * bool(exact) + net.used
                     + [f"kind {g.kind}" for g in exact + approximate]
                     + ["blocked"] * any(g.blocked for g in dep.groups))

    sample()
    return tally


def test_generator_yields_prunable_groups_in_most_examples():
    """The generator is not vacuous: nearly every drawn graph has a group to cut, most
    an exact one, and channel, neuron, head and hidden groups all occur."""
    cnn, seq = tally_examples(draw_cnn, 120), tally_examples(draw_seq, 40)
    for tally in (cnn, seq):
        assert tally["candidates"] >= 0.9 * tally["examples"], tally
        assert tally["exact"] >= 0.75 * tally["examples"], tally
        assert tally["blocked"], tally
    total = cnn + seq
    assert all(total[f"kind {k}"] for k in ("channel", "neuron", "head", "hidden")), total
