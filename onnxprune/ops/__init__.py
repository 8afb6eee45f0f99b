"""One home per op family: each module of this package holds everything the pipeline
needs to know about its ops (channel rule, cost, weight views, bias carrier, refit,
latency probe, sparsity view) and registers it in `registry`. The rule interface is
in `rule`; modules without registrations (`align`, `axes`, `regroup`, `target`,
`values`) hold what several shape rules share."""

from .registry import OpFamily, Sink, SparseLayer, WeightView, families, family_for, family_of

__all__ = ["OpFamily", "Sink", "SparseLayer", "WeightView", "families", "family_for",
           "family_of"]
