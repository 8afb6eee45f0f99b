"""Plan files: the decisions a run made, written as JSON and replayed on a model (the
decisions themselves, in memory, are `planning/`).

Every document carries the same envelope: `format`, `format_version`, a `kind`,
`tool_version`, the `model` it was made for (a structural fingerprint), the `options`
it was made with, and its entries. Each kind has a module here that reads and writes
its entries: `prune.py` (removed unit indices per group) and `sparsify.py` (a zero mask
per layer). Groups and layers are named structurally, never by node or tensor names
(those change between exports of one network), so a plan replays on any export of the
same network and is refused on another.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ..errors import InputError

FORMAT = "onnxprune-plan"
FORMAT_VERSION = 1
KINDS = ("prune", "sparsify")


def document(kind: str, model: dict, options: dict, entries: tuple[str, list]) -> dict:
    """A plan document: the envelope, then the entries under their name."""
    from .. import __version__

    name, values = entries
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
            "tool_version": __version__, "model": model, "options": options, name: values}


def read(source: str | Path | dict, kind: str) -> dict:
    """A plan document from a path (or a dict), checked for format, version and kind,
    and its entries by the kind's module."""
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
    importlib.import_module(f"{__name__}.{kind}").check(document)
    return document


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: no such plan file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable plan file ({exc})") from None
