"""Warnings for a prune request that cut less than it asked for: a ratio for a kind
of group the model does not have, options that leave nothing to remove, a plan that
removes nothing. The model is still written (it is valid); the warnings go to the
report and, on the command line, to stderr."""

from __future__ import annotations

from collections import Counter

from .planning import CHANNEL_KINDS, PlanOptions

NOTHING = "the plan removes nothing: the model is written with its structure unchanged"
LABELS = {CHANNEL_KINDS: "channel or neuron", ("head",): "attention head",
          ("hidden",): "hidden"}


def requested_cuts(options: PlanOptions) -> list[tuple[str, tuple[str, ...]]]:
    """(the option as given, the group kinds it cuts) for every cut asked for."""
    asked = []
    if options.ratio:
        asked.append((f"--ratio {options.ratio:g}", CHANNEL_KINDS))
    target = options.target()
    if target is not None and target[1] < 1:
        asked.append((f"--target-{target[0]} {target[1]:g}", CHANNEL_KINDS))
    if options.head_ratio:
        asked.append((f"--head-ratio {options.head_ratio:g}", ("head",)))
    if options.hidden_ratio:
        asked.append((f"--hidden-ratio {options.hidden_ratio:g}", ("hidden",)))
    return asked


def cut_warnings(groups: list, asked: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """One warning per requested cut that removed nothing (`groups`: the report's
    GroupReports), and one when the whole plan removes nothing."""
    warnings = []
    for flag, kinds in asked:
        label = LABELS[kinds]
        candidates = [g for g in groups if g.kind in kinds and not g.blocked]
        if any(g.removed for g in candidates):
            continue
        if not candidates:
            warnings.append(f"{flag} cuts nothing: the model has no prunable {label} groups")
            continue
        skipped = [g.skipped for g in candidates if g.skipped]
        why = Counter(skipped).most_common(1)[0][0] if len(skipped) == len(candidates) \
            else "the ratio rounds to no unit; see --round-to and --min-channels"
        warnings.append(f"{flag} cuts nothing: none of the {len(candidates)} prunable "
                        f"{label} groups loses a unit ({why})")
    if asked and not any(g.removed for g in groups):
        warnings.append(NOTHING)
    return warnings
