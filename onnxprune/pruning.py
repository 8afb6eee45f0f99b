"""The steps of a prune run after planning: reconstruction, looked up by name in
`RECONSTRUCTIONS`, and verification of the rewritten model (naming a faulty group)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import ModelProto

from .analysis import ActivationStats, Analysis
from .errors import VerificationError
from .reconstruct import compensate_bias
from .refit import refit_layerwise
from .verify import check_plan

Removed = dict[int, np.ndarray]
Progress = Callable[[int], None] | None


def _keep(analysis: Analysis, removed: Removed, stats: ActivationStats, ridge: float,
          progress: Progress) -> None:
    """No reconstruction: the kept weights stay as they are."""


def _fold_bias(analysis: Analysis, removed: Removed, stats: ActivationStats, ridge: float,
               progress: Progress) -> None:
    """Fold each removed channel's mean contribution into its consumers' biases."""
    compensate_bias(analysis.dep, removed, stats([analysis.dep.groups[g] for g in removed]))


def _refit(analysis: Analysis, removed: Removed, stats: ActivationStats, ridge: float,
           progress: Progress) -> None:
    """Refit the kept weights layer by layer by ridge regression on calibration data."""
    refit_layerwise(analysis.dep, removed, analysis.proto, analysis.stream, ridge, progress)


# `--reconstruct` methods: (analysis, removed units, activation statistics, ridge,
# progress) -> None; they change the analysis' constants before the rewrite.
RECONSTRUCTIONS: dict[str, Callable[..., None]] = {
    "none": _keep,
    "bias": _fold_bias,
    "lsq": _refit,
}


def verify(pruned: ModelProto, analysis: Analysis, removed: Removed,
           feeds: dict[str, np.ndarray]) -> None:
    """Check the written-model invariants and mask equivalence; name a faulty group."""
    try:
        check_plan(pruned, analysis.dep, removed, analysis.proto, feeds)
    except VerificationError as exc:
        culprit = _culprit(analysis, removed, feeds)
        raise VerificationError(f"pruned model failed verification ({exc}){culprit}; "
                                "nothing was written") from None


def _culprit(analysis: Analysis, removed: Removed, feeds: dict[str, np.ndarray]) -> str:
    """Name the first group that fails on its own, to point at the faulty rule."""
    for gid, units in removed.items():
        single = {gid: units}
        try:
            check_plan(analysis.rewritten(single), analysis.dep, single, analysis.proto, feeds)
        except VerificationError as exc:
            group = analysis.dep.groups[gid]
            nodes = ", ".join(name for name, _ in group.producers[:3]) or group.root.tensor
            return f"; group {gid} (produced by {nodes}) fails alone: {exc}"
    return ""
