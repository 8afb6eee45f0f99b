"""The op registry: every op the package knows is registered with the hooks its family
requires, and a forgotten registration or hook fails here, not as blocked groups."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import onnx_graphsurgeon as gs
import pytest

import onnxprune.ops as ops
from onnxprune.ops import registry
from onnxprune.ops.axes import PASS_THROUGH
from onnxprune.ops.elementwise import Unary
from onnxprune.ops.registry import OpFamily, families, family_for, missing_hooks
from onnxprune.ops.rule import Rule
from onnxprune.ops.values import ARITHMETIC

COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "LSTM", "GRU", "RNN",
           "com.microsoft::Attention", "com.microsoft::MultiHeadAttention",
           "com.microsoft::GroupQueryAttention"}


def family_modules():
    return [importlib.import_module(f"onnxprune.ops.{m.name}")
            for m in pkgutil.iter_modules(ops.__path__)]


def test_every_registration_has_the_hooks_its_family_requires():
    assert missing_hooks(families()) == []


def test_every_rule_class_of_the_package_is_registered():
    """A rule written but never passed to `register` would block silently."""
    registered = {type(family.rule) for family in families().values()}
    for module in family_modules():
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, Rule) and cls is not Rule and \
                    cls.__module__ == module.__name__ and not name.startswith("_"):
                assert cls in registered, f"{module.__name__}.{name} is not registered"


def test_the_known_compute_ops_are_priced():
    found = {op for op, family in families().items() if family.compute}
    assert found >= COMPUTE
    assert all(families()[op].macs is not None for op in found)
    assert not any(families()[op].compute for op in ("Relu", "Add", "Reshape", "Softmax"))


def test_ops_other_modules_follow_are_registered():
    """Ops followed as pass-through (axis moves) or as shape arithmetic have rules, and
    the pass-through ones keep every axis."""
    for op in PASS_THROUGH:
        assert isinstance(families()[op].rule, Unary), op
    assert all(op in families() for op in ARITHMETIC)


def test_a_compute_op_without_a_cost_fails_the_check():
    class Fake(Rule):
        def propagate(self, node, slot, view, edges):
            pass

    class Seeding(Fake):
        def seeds(self, node, view):
            return []

    problems = missing_hooks({"Fake": OpFamily(Fake(), compute=True),
                              "Seeds": OpFamily(Seeding(), compute=False),
                              "Blank": OpFamily(Rule())})
    assert problems == ["Blank: no channel rule",
                        "Fake: a compute op without a cost (macs) hook",
                        "Seeds: a layer with a weight, not marked compute"]


def test_registering_an_op_twice_fails():
    with pytest.raises(ValueError, match="Conv is registered twice"):
        registry.register("Conv", rule=families()["Conv"].rule)


def test_weight_views_are_one_list_with_named_differences():
    """The dependency graph sees through views that keep axes; the sparsifier through
    the views it can write back; Transpose is only the second, QuantizeLinear only
    the first."""
    views = {op: family.view for op, family in families().items() if family.view}
    assert sorted(op for op, v in views.items() if v.keeps_axes) == [
        "Cast", "DequantizeLinear", "Identity", "QuantizeLinear"]
    assert sorted(op for op, v in views.items() if v.writable) == [
        "Cast", "DequantizeLinear", "Identity", "Transpose"]


def test_lookup_follows_the_domain():
    node = gs.Node("Attention", domain="com.microsoft")
    assert family_for(node) is families()["com.microsoft::Attention"]
    assert family_for(gs.Node("Attention")) is None
    assert family_for(gs.Node("Conv", domain="ai.onnx")) is families()["Conv"]
