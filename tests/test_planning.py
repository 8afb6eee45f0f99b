"""The planning interface: planners chosen by the options, `--criterion` spellings,
budgets as meters, and the options object that checks itself."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_api import chain

import onnxprune
from onnxprune.cost import Cost
from onnxprune.criteria import CRITERIA
from onnxprune.errors import InputError
from onnxprune.options import Decisions, PruneOptions
from onnxprune.planning import PLANNERS, Plan, PlanOptions, criterion_names, planner_for, ranking
from onnxprune.planning.budgets import energy_meter, macs_meter

CHOSEN_BY = [
    ({"ratio": 0.5}, "uniform"),
    ({"target_macs": 0.5, "global_ranking": True}, "global"),
    ({"ratio": 0.5, "criterion": "zero", "global_ranking": True}, "zero"),
    ({"target_macs": 0.5, "criterion": "sensitivity", "global_ranking": True}, "sensitivity"),
]


@pytest.mark.parametrize(("options", "name"), CHOSEN_BY)
def test_the_options_choose_the_planner(options, name):
    assert planner_for(PlanOptions(**options)).name == name


def test_every_registered_planner_is_chosen_by_some_options():
    assert {name for _, name in CHOSEN_BY} == set(PLANNERS)
    for planner in PLANNERS.values():
        assert planner.ranks_by is None or planner.ranks_by in CRITERIA


def test_sensitivity_is_a_planner_spelled_as_a_criterion():
    assert "sensitivity" not in CRITERIA
    assert criterion_names()[-1] == "sensitivity"
    assert ranking("sensitivity") is CRITERIA["wanda"] and ranking("zero") is CRITERIA["zero"]
    assert [name for name in criterion_names() if ranking(name).needs_data] == [
        "activation", "apoz", "variance", "wanda", "taylor", "fisher", "snip", "sensitivity"]


def test_an_unknown_criterion_names_every_spelling():
    with pytest.raises(InputError, match="choose one of l1, l2, bn_scale, random, zero, "
                                         "activation, apoz, variance, wanda, taylor, fisher, "
                                         "snip, sensitivity$"):
        ranking("nope")


@pytest.mark.parametrize("target", ["target_latency", "target_energy"])
def test_sensitivity_refuses_other_budgets_before_any_work(target):
    with pytest.raises(InputError, match="^--criterion sensitivity plans against --ratio or "
                                         "--target-macs$"):
        onnxprune.prune("no-such-model.onnx", criterion="sensitivity", calib="none.npz",
                        **{target: 0.5})


def test_options_are_frozen_and_checked_when_made():
    options = PruneOptions(ratio=0.5, ignore=["Conv"])
    assert options.ignore == ("Conv",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.round_to = 8
    with pytest.raises(InputError, match="--ratio must be in"):
        PruneOptions(ratio=1.5)
    with pytest.raises(InputError, match="needs calibration data"):
        PruneOptions(ratio=0.5, criterion="wanda")
    with pytest.raises(InputError, match="do not give ratio"):
        PruneOptions(ratio=0.5, plan="plan.json")
    assert PruneOptions(ratio=0.5, calib="c.npz").planning().criterion == "wanda"


def test_recorded_options_keep_their_order_and_take_a_chosen_rounding():
    planning = PlanOptions(ratio=0.5)
    decisions = Decisions(planning, "none", 0.1)
    recorded = decisions.recorded(8)
    names = [f.name for f in dataclasses.fields(PlanOptions)]
    assert list(recorded) == names + ["reconstruct", "ridge"]
    assert recorded["round_to"] == 8 and planning.round_to is None
    assert decisions.recorded()["round_to"] is None and planning.rounding == 16


def test_closed_form_meters_settle_directly():
    def price(removed):
        cut = sum(len(units) for units in (removed or {}).values())
        return Cost(macs=100 - 10 * cut, params=10 - cut, activations=0, per_node={})

    removed = {0: np.arange(3)}
    macs, energy = macs_meter(price), energy_meter(price)
    assert macs(removed) == pytest.approx(0.7)
    assert macs.rounding(lambda: pytest.fail("no rounding to choose")) is None
    plan = Plan(removed)
    assert macs.settle(lambda goal: plan, 0.7) == (plan, None)
    settled, outcome = energy.settle(lambda goal: plan, 0.9)
    assert settled is plan and list(outcome) == ["dense_joules", "target"]
    assert outcome["target"] == 0.9 and 0.0 < energy(removed) < 1.0


def test_the_keyword_form_builds_the_options_object():
    _, model = chain()
    _, by_keywords = onnxprune.prune(model, 0.5, round_to=8, criterion="l2")
    options = onnxprune.PruneOptions(ratio=0.5, round_to=8, criterion="l2")
    _, by_options = onnxprune.prune_with(model, options)
    assert by_options.plan_document == by_keywords.plan_document
    assert by_options.criterion == "l2" and by_options.round_to == 8
