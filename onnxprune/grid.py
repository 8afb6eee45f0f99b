"""Sweep grids: `"ratio=0.1,0.2;criterion=l1,wanda"` → one setting per combination,
each a dict of `PruneOptions` fields, checked before any work."""

from __future__ import annotations

import itertools
import math
import re
import typing
from dataclasses import dataclass, fields

from .errors import InputError
from .options import PruneOptions

# Fields fixed for the whole sweep (its data and how it is read), never swept.
FIXED = {"calib", "calib_samples", "batch_size", "images", "input_shapes", "plan", "progress",
         "show_progress"}
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Setting:
    """One combination of the grid: its name (`ratio=0.1 criterion=l1`), a file stem
    (`ratio-0.1_criterion-l1`) and the options it sets."""

    name: str
    stem: str
    options: dict


def grid_keys() -> dict[str, type]:
    """The options a grid may sweep (scalar fields of `PruneOptions`) and their types."""
    hints = typing.get_type_hints(PruneOptions)
    keys = {}
    for field in fields(PruneOptions):
        kinds = [t for t in typing.get_args(hints[field.name]) or (hints[field.name],)
                 if t is not type(None)]
        if field.name not in FIXED and len(kinds) == 1 and kinds[0] in (float, int, str, bool):
            keys[field.name] = kinds[0]
    return keys


def parse_grid(text: str) -> list[Setting]:
    """Every combination of `key=v1,v2;key=v1,...`, the first key varying slowest.
    Keys are `PruneOptions` fields (`head_ratio` or `head-ratio`); values are parsed by
    the field's type. An unknown key, a repeated key or value, or a value of the wrong
    type is refused."""
    axes: dict[str, list] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        key, sep, values = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--grid {part!r}: expected KEY=V1,V2,... (e.g. ratio=0.1,0.2)")
        if key in axes:
            raise InputError(f"--grid: key {key!r} is given twice")
        axes[key] = _values(key, values)
    if not axes:
        raise InputError("--grid is empty: give KEY=V1,V2,... (e.g. ratio=0.1,0.2)")
    return [_setting(dict(zip(axes, combo, strict=True)))
            for combo in itertools.product(*axes.values())]


def _values(key: str, text: str) -> list:
    keys = grid_keys()
    if key not in keys:
        raise InputError(f"--grid: unknown key {key!r}; choose from {', '.join(sorted(keys))}")
    values = [_value(key, keys[key], v.strip()) for v in text.split(",")]
    for index, value in enumerate(values):
        if value in values[:index]:
            raise InputError(f"--grid: key {key!r} lists {value!r} twice")
    return values


def _value(key: str, kind: type, text: str):
    if not text:
        raise InputError(f"--grid: key {key!r} has an empty value")
    if kind is bool and text.lower() in TRUE | FALSE:
        return text.lower() in TRUE
    try:
        value = None if kind is bool else kind(text)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        raise InputError(f"--grid: {key}={text!r} is not {_article(kind)}")
    return value


def _article(kind: type) -> str:
    return {float: "a number", int: "an integer", bool: "true or false"}.get(kind, "a name")


def _setting(options: dict) -> Setting:
    name = " ".join(f"{k}={v}" for k, v in options.items())
    stem = "_".join(f"{k}-{v}" for k, v in options.items())
    return Setting(name, re.sub(r"[^A-Za-z0-9.+_-]", "_", stem), options)


def check_settings(settings: list[Setting], base: dict) -> None:
    """Make every setting's options (with the sweep's base options) once, so a bad
    combination is refused, naming its setting, before any work."""
    for setting in settings:
        try:
            PruneOptions(**dict(base, **setting.options), calib="held-out split")
        except InputError as exc:
            raise InputError(f"grid setting {setting.name}: {exc}") from None
