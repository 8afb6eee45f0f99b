"""Verification: the invariants of every written model (`written`), the masked
reference a pruned model must equal and output comparisons (`reference`), and the
onnxruntime runs they rest on (`runs`; sessions come from `targets.onnxruntime`)."""

from __future__ import annotations

from .reference import (
    HIDDEN_TOLERANCE,
    check_plan,
    check_pruned,
    hidden_bounds,
    outputs_close,
    reference_model,
    relative_error,
)
from .runs import run, run_source, sample_feeds, truncated
from .written import check_written

__all__ = ["HIDDEN_TOLERANCE", "check_plan", "check_pruned", "check_written", "hidden_bounds",
           "outputs_close", "reference_model", "relative_error", "run", "run_source",
           "sample_feeds", "truncated"]
