"""Prune plan files: removed unit indices per group.

A group's *signature* is its kind, unit count, channels per unit and the shapes and
axes of the weights that produce and absorb it; its *key* adds its rank among groups
of the same signature, in graph order. The model *fingerprint* hashes every key and
the inputs' ranks and element types.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from onnx import ModelProto

from ..depgraph import DepGraph, Group, Role
from ..errors import InputError
from ..planning import Plan, PlanOptions
from ..shapes import input_specs
from . import document as envelope

KIND = "prune"
WEIGHT_ROLES = (Role.OUT, Role.IN)


def group_signature(group: Group, dep: DepGraph) -> str:
    """Kind, size and the weights around a group, free of names."""
    weights = sorted(f"{group.roles[slot].value}{list(dep.view.shape(slot.tensor) or ())}"
                     f"@{slot.axis}" for slot in group.members
                     if group.roles.get(slot) in WEIGHT_ROLES and dep.view.is_weight(slot.tensor))
    text = f"{group.kind}:{group.units}x{group.channels_per_unit}:" + ",".join(weights)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_keys(dep: DepGraph) -> list[str]:
    """One key per group (in dep.groups order): signature and rank among equals."""
    seen: dict[str, int] = {}
    keys = []
    for group in dep.groups:
        signature = group_signature(group, dep)
        keys.append(f"{signature}#{seen.get(signature, 0)}")
        seen[signature] = seen.get(signature, 0) + 1
    return keys


def fingerprint(dep: DepGraph, proto: ModelProto) -> str:
    """A hash of the model's group structure and its inputs' ranks and types."""
    inputs = [(len(s.type.tensor_type.shape.dim), s.type.tensor_type.elem_type)
              for s in input_specs(proto)]
    text = json.dumps([sorted(group_keys(dep)), inputs])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def document(dep: DepGraph, proto: ModelProto, plan: Plan, options: dict) -> dict:
    """The plan file of a prune run: options, fingerprint, removed units per group."""
    keys = group_keys(dep)
    entries = [{"key": keys[gid], "kind": dep.groups[gid].kind, "units": dep.groups[gid].units,
                "channels_per_unit": dep.groups[gid].channels_per_unit,
                "producers": [name for name, _ in dep.groups[gid].producers],
                "removed": [int(u) for u in units]}
               for gid, units in sorted(plan.removed.items()) if len(units)]
    model = {"fingerprint": fingerprint(dep, proto), "groups": len(dep.groups)}
    return envelope(KIND, model, options, ("groups", entries))


def check(document: dict) -> None:
    """A prune document's groups: a key, a unit count and removed unit indices."""
    entries = document.get("groups")
    if not isinstance(entries, list) or not all(_entry_ok(e) for e in entries):
        raise InputError("the plan's groups are malformed: each needs a key, a unit count "
                         "and sorted, distinct removed unit indices below it")


def replay(document: dict, dep: DepGraph, proto: ModelProto) -> Plan:
    """The plan a document describes, on this model; refused when it does not match."""
    expected, actual = document["model"]["fingerprint"], fingerprint(dep, proto)
    if expected != actual:
        raise InputError("the plan does not match this model: it was made for a network "
                         f"with fingerprint {expected[:19]}…, this one has {actual[:19]}… "
                         "(different groups, weight shapes or inputs)")
    check(document)
    by_key = dict(zip(group_keys(dep), dep.groups, strict=True))
    removed: dict[int, np.ndarray] = {}
    for entry in document["groups"]:
        group = by_key.get(entry["key"])
        if group is None or group.units != entry["units"] or not group.prunable:
            raise InputError(f"the plan's group {entry['key']} has no prunable match in this "
                             "model")
        removed[group.id] = np.asarray(entry["removed"], np.int64)
    skipped = {g.id: g.blocked[0] if g.blocked else "not in the plan"
               for g in dep.groups if g.id not in removed}
    return Plan(removed, skipped)


def _entry_ok(entry) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        return False
    units, removed = entry.get("units"), entry.get("removed")
    if not isinstance(units, int) or not isinstance(removed, list) or not removed:
        return False
    if not all(isinstance(u, int) for u in removed):
        return False
    return removed == sorted(set(removed)) and removed[0] >= 0 and removed[-1] < units \
        and len(removed) < units


def plan_options(document: dict) -> PlanOptions:
    """The planning options a document recorded (keys PlanOptions does not know are
    ignored), checked as any planning options are."""
    recorded = document.get("options") or {}
    known = {name: value for name, value in recorded.items()
             if name in PlanOptions.__dataclass_fields__}
    if isinstance(known.get("ignore"), list):
        known["ignore"] = tuple(known["ignore"])
    try:
        return PlanOptions(**known)
    except TypeError as exc:
        raise InputError(f"the plan's options are malformed ({exc})") from None
