"""Planning: which units of which groups to remove, decided in memory (a `Plan`; plan
files are `planfiles/`).

Every strategy is a planner behind one interface (`planners.py`: a `Problem` in, a
`Planned` out), looked up by name; every budget is a meter behind one interface
(`budgets.py`: MACs, energy; `latency.py`: latency). `plan()` scores the eligible
groups, builds the budget of the options' target and runs the planner they choose.
"""

from __future__ import annotations

from .options import CHANNEL_KINDS, DEFAULT_ROUND_TO, PlanOptions
from .planners import PLANNERS, Planner, criterion_names, plan, planner_for, ranking
from .problem import Plan, Planned, Problem, Removed, eligible

__all__ = ["CHANNEL_KINDS", "DEFAULT_ROUND_TO", "PLANNERS", "Plan", "PlanOptions", "Planned",
           "Planner", "Problem", "Removed", "criterion_names", "eligible", "plan",
           "planner_for", "ranking"]
