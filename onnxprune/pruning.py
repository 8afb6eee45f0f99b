"""The steps of a prune run after planning: reconstruction, looked up by name in
`RECONSTRUCTIONS`, and verification of the rewritten model (naming a faulty group)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from onnx import ModelProto

from .analysis import ActivationStats, Analysis
from .errors import VerificationError
from .reconstruct import compensate_bias
from .refit import Ridge, refit_layerwise
from .rewrite import Values
from .verify import check_plan

if TYPE_CHECKING:
    from .bench import Progress
    from .distributed import Executor
    from .planning.problem import Removed


Details = dict  # what a reconstruction reports (JSON-ready)


def _keep(analysis: Analysis, removed: Removed, stats: ActivationStats, ridge: Ridge,
          progress: Progress, executor: Executor | None = None,
          teacher: Analysis | None = None, max_memory: int | None = None
          ) -> tuple[Values, Details]:
    """No reconstruction: the kept weights stay as they are."""
    return {}, {}


def _fold_bias(analysis: Analysis, removed: Removed, stats: ActivationStats, ridge: Ridge,
               progress: Progress, executor: Executor | None = None,
               teacher: Analysis | None = None, max_memory: int | None = None
               ) -> tuple[Values, Details]:
    """Fold each removed channel's mean contribution into its consumers' biases (in the
    model as it is: units removed before contribute nothing)."""
    return compensate_bias(analysis.dep, removed,
                           stats([analysis.dep.groups[g] for g in removed]))[0], {}


def _refit(analysis: Analysis, removed: Removed, stats: ActivationStats, ridge: Ridge,
           progress: Progress, executor: Executor | None = None,
           teacher: Analysis | None = None, max_memory: int | None = None
           ) -> tuple[Values, Details]:
    """Refit the kept weights layer by layer by ridge regression on calibration data
    (toward the `teacher`'s layer outputs when given)."""
    dense = (teacher.dep.view, teacher.proto) if teacher is not None else None
    values, refit, kept, chosen = refit_layerwise(analysis.dep, removed, analysis.proto,
                                                  analysis.stream, ridge, progress,
                                                  executor, dense, max_memory)
    counts = Counter(chosen)
    return values, {"layers_refit": refit, "layers_not_refit": kept, "ridge": ridge,
                    "ridges_chosen": {f"{r:g}": counts[r] for r in sorted(counts)}}


# `--reconstruct` methods: (analysis, removed units, activation statistics, ridge,
# progress, executor for a level's solves, teacher, bytes a calibration level may hold)
# -> new constant values by name, which the rewrite applies (the analysis itself is
# left as it is: its groups still describe the input model), and details for the report.
# The teacher (None: the analyzed model) is the dense model a round of `--rounds` fits to.
RECONSTRUCTIONS: dict[str, Callable[..., tuple[Values, Details]]] = {
    "none": _keep,
    "bias": _fold_bias,
    "lsq": _refit,
}


def verify(pruned: ModelProto, analysis: Analysis, removed: Removed,
           feeds: dict[str, np.ndarray], values: Values | None = None) -> None:
    """Check the written-model invariants and mask equivalence (against the original
    with the reconstruction's new `values`); name a faulty group."""
    try:
        check_plan(pruned, analysis.dep, removed, analysis.proto, feeds, values)
    except VerificationError as exc:
        culprit = _culprit(analysis, removed, feeds, values)
        raise VerificationError(f"pruned model failed verification ({exc}){culprit}; "
                                "nothing was written") from None


def _culprit(analysis: Analysis, removed: Removed, feeds: dict[str, np.ndarray],
             values: Values | None) -> str:
    """Name the first group that fails on its own, to point at the faulty rule."""
    for gid, units in removed.items():
        single = {gid: units}
        try:
            check_plan(analysis.rewritten(single, values), analysis.dep, single,
                       analysis.proto, feeds, values)
        except VerificationError as exc:
            group = analysis.dep.groups[gid]
            nodes = ", ".join(name for name, _ in group.producers[:3]) or group.root.tensor
            return f"; group {gid} (produced by {nodes}) fails alone: {exc}"
    return ""
