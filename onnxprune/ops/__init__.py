"""One home per op family: each module of this package holds everything the pipeline
needs to know about its ops (channel rule, cost, weight views, bias carrier, refit,
latency probe, sparsity view) and registers it in `registry`, which finds the modules
itself: a new op is one new module. The rule interface is in `rule`; modules without
registrations hold what several families share: `layer` (bias carriers and weight
checks of compute layers), `align`, `regroup` and `axes` (following an axis through
ops that regroup or move axes), `target` (Reshape and Expand targets) and `values`
(static values of shape computations)."""

from __future__ import annotations

from .registry import OpFamily, Sink, SparseLayer, WeightView, families, family_for, family_of

__all__ = ["OpFamily", "Sink", "SparseLayer", "WeightView", "families", "family_for",
           "family_of"]
