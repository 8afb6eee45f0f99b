"""Runtime configurations beside a model that state its sizes (onnxruntime-genai's
`genai_config.json`, a transformers `config.json`): their pruned values, to be written
beside the pruned model. Sizes are matched to what the plan changed: key/value heads to
the key/value-cache inputs' new size, query heads in the same proportion, the FFN and
hidden sizes to the kept counts of the neuron and hidden groups of that size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .reporting import Report

CONFIG_FILES = ("genai_config.json", "config.json")
KV_HEADS, HEADS = "num_key_value_heads", "num_attention_heads"


def pruned_configs(model_path: str | Path, report: Report) -> tuple[dict[str, str], list[str]]:
    """{file name: new text} for each configuration beside `model_path`, and warnings
    for sizes the pruned model no longer has one value of."""
    folder = Path(model_path).parent
    texts, warnings = {}, []
    for name in CONFIG_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            warnings.append(f"{name} beside the model is not readable JSON; not rewritten")
            continue
        values, skipped = new_sizes(config, report)
        warnings += [f"{name}: {key} is left as it was: {why}" for key, why in skipped.items()]
        new = _replaced(config, values)
        if "head_dim" in values:
            new["head_dim"] = values["head_dim"]
        texts[name] = json.dumps(new, indent=2) + "\n"
    return texts, warnings


def new_sizes(config: dict, report: Report) -> tuple[dict[str, int], dict[str, str]]:
    """Pruned values of the sizes the configuration states, and the sizes left alone."""
    old = _found(config)
    values: dict[str, int] = {}
    skipped: dict[str, str] = {}
    heads = old.get(HEADS)
    kv = old.get(KV_HEADS, heads)
    kept = {c["after"] for c in report.io_changes if c["kind"] == "input"}
    if kv and kept:
        if len(kept) == 1 and heads and heads % kv == 0:
            values[KV_HEADS] = kept.pop()
            values[HEADS] = values[KV_HEADS] * (heads // kv)
        else:
            skipped[KV_HEADS] = "the cache tensors of the layers differ in size"
    for key, kind in (("intermediate_size", "neuron"), ("hidden_size", "hidden")):
        if key in old:
            sizes = {g.kept * g.channels_per_unit for g in report.groups if g.kind == kind and
                     g.size * g.channels_per_unit == old[key] and g.removed}
            if len(sizes) == 1:
                values[key] = sizes.pop()
            elif sizes:
                skipped[key] = "its layers keep different sizes"
    return values, skipped


def _found(config: dict) -> dict[str, int]:
    """The first integer value of each key anywhere in the configuration."""
    found: dict[str, int] = {}
    stack = [config]
    while stack:
        item = stack.pop(0)
        for key, value in item.items():
            if isinstance(value, dict):
                stack.append(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                found.setdefault(key, value)
    return found


def _replaced(config: dict, values: dict[str, int]) -> dict:
    """A copy with every integer entry named in `values` replaced, at any depth."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = _replaced(value, values)
        elif key in values and isinstance(value, int) and not isinstance(value, bool):
            out[key] = values[key]
        else:
            out[key] = value
    return out
