"""Plan files: the decisions a run made, written as JSON and replayed on a model.

A plan names groups structurally, never by node or tensor names (those change
between exports of one network): a group's *signature* is its kind, unit count,
channels per unit and the shapes and axes of the weights that produce and absorb
it; its *key* adds its rank among groups of the same signature, in graph order.
The model *fingerprint* hashes every key and the inputs' ranks and element types,
so a plan replays on any export of the same network and is refused on another.

Every document carries a `kind`: `prune` (removed unit indices per group); other
kinds (per-layer sparsity masks) add their own entry reader to `KINDS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import ModelProto

from .depgraph import DepGraph, Group, Role
from .errors import InputError
from .plan import Plan
from .shapes import input_specs

FORMAT = "onnxprune-plan"
FORMAT_VERSION = 1
WEIGHT_ROLES = (Role.OUT, Role.IN)


def group_signature(group: Group, dep: DepGraph) -> str:
    """Kind, size and the weights around a group, free of names."""
    weights = sorted(f"{group.roles[slot].value}{list(dep.view.shape(slot.tensor) or ())}"
                     f"@{slot.axis}" for slot in group.members
                     if group.roles.get(slot) in WEIGHT_ROLES and dep.view.is_weight(slot.tensor))
    text = f"{group.kind}:{group.units}x{group.channels}:" + ",".join(weights)
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


def prune_document(dep: DepGraph, proto: ModelProto, plan: Plan, options: dict) -> dict:
    """The plan file of a prune run: options, fingerprint, removed units per group."""
    from . import __version__

    keys = group_keys(dep)
    entries = [{"key": keys[gid], "kind": dep.groups[gid].kind, "units": dep.groups[gid].units,
                "channels_per_unit": dep.groups[gid].channels,
                "producers": [name for name, _ in dep.groups[gid].producers],
                "removed": [int(u) for u in units]}
               for gid, units in sorted(plan.removed.items()) if len(units)]
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "prune",
            "tool_version": __version__,
            "model": {"fingerprint": fingerprint(dep, proto), "groups": len(dep.groups)},
            "options": options, "groups": entries}


def read(source: str | Path | dict, kind: str) -> dict:
    """A plan document from a path (or a dict), checked for format, version and kind."""
    document = source if isinstance(source, dict) else _load_json(Path(source))
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"{source}: not an onnxprune plan file")
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(f"{source}: plan format version {version} is newer than this "
                         f"onnxprune reads ({FORMAT_VERSION}); upgrade onnxprune")
    if document.get("kind") != kind:
        raise InputError(f"{source}: a {document.get('kind')!r} plan; this command replays "
                         f"{kind!r} plans")
    KINDS[kind](document, None)
    return document


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no such plan file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable plan file ({exc})") from None


def replay(document: dict, dep: DepGraph, proto: ModelProto) -> Plan:
    """The plan a document describes, on this model; refused when it does not match."""
    expected, actual = document["model"]["fingerprint"], fingerprint(dep, proto)
    if expected != actual:
        raise InputError("the plan does not match this model: it was made for a network "
                         f"with fingerprint {expected[:19]}…, this one has {actual[:19]}… "
                         "(different groups, weight shapes or inputs)")
    return KINDS[document["kind"]](document, dep)


def _prune_entries(document: dict, dep: DepGraph | None) -> Plan | None:
    """Check a prune document's entries; with a model, map them onto its groups."""
    entries = document.get("groups")
    if not isinstance(entries, list) or not all(_entry_ok(e) for e in entries):
        raise InputError("the plan's groups are malformed: each needs a key, a unit count "
                         "and sorted, distinct removed unit indices below it")
    if dep is None:
        return None
    by_key = dict(zip(group_keys(dep), dep.groups, strict=True))
    removed: dict[int, np.ndarray] = {}
    for entry in entries:
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


KINDS: dict[str, Callable[[dict, DepGraph | None], Plan | None]] = {"prune": _prune_entries}


def plan_options(document: dict, options_type: type) -> object:
    """The planning options recorded in a document, as `options_type` (a dataclass);
    keys it does not know are ignored."""
    recorded = document.get("options") or {}
    known = {name: value for name, value in recorded.items()
             if name in options_type.__dataclass_fields__}
    if isinstance(known.get("ignore"), list):
        known["ignore"] = tuple(known["ignore"])
    try:
        return options_type(**known)
    except TypeError as exc:
        raise InputError(f"the plan's options are malformed ({exc})") from None


def reconstruction(document: dict | None, reconstruct: str | None, ridge: float,
                   calibrated: bool) -> tuple[str, float]:
    """The reconstruction and ridge to run: as given when `reconstruct` is; else those
    the replayed plan recorded (a refit is part of what it decided; it needs the
    calibration data again); else lsq with calibration data and none without."""
    recorded = (document or {}).get("options") or {}
    if reconstruct is not None or recorded.get("reconstruct") not in ("none", "bias", "lsq"):
        return reconstruct or ("lsq" if calibrated else "none"), ridge
    reconstruct, given = recorded["reconstruct"], recorded.get("ridge")
    if reconstruct != "none" and not calibrated:
        raise InputError(f"the plan was made with --reconstruct {reconstruct}, which needs "
                         "calibration data: give --calib DATA (the data it was made with "
                         "gives the same weights) or --reconstruct none")
    return reconstruct, float(given) if isinstance(given, (int, float)) else ridge
