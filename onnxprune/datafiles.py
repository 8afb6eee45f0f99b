"""Writing models with external data: `write()` streams every tensor into one data
file beside the model (the model itself is not changed); `on_disk()` gives onnx and
onnxruntime a temporary path to read (the checker and sessions need one past
protobuf's 2 GB limit)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, numpy_helper

from .external import CHUNK, MIN_BYTES, _info, _pad, _set_info, is_external, length, tensors

HOLES = {}  # `write(link=HOLES)`: external tensors become holes in the data file


def write(model: ModelProto, path: Path, data_name: str, link: bool | dict = False
          ) -> None:
    """Write a model with its tensors of at least `MIN_BYTES` in `data_name` beside it,
    streamed one tensor (and one chunk of an external one) at a time; the model itself
    is not changed. `link`: hard-link the source data files beside it instead of
    copying from them, where the file system allows (for temporary copies)."""
    light = _skeleton(model)
    linked = link if link is HOLES else {} if link else None
    with open(path.parent / data_name, "wb") as data:
        for tensor in model.graph.initializer:
            light.graph.initializer.append(_stored(tensor, data, data_name, linked))
        for tensor in tensors(light)[len(light.graph.initializer):]:
            if is_external(tensor):  # a Constant node's value
                tensor.CopyFrom(_stored(tensor, data, data_name, linked))
    path.write_bytes(light.SerializeToString())


def _skeleton(model: ModelProto) -> ModelProto:
    """The model without its graph's initializers (nothing large is copied)."""
    light = ModelProto()
    for descriptor, value in model.ListFields():
        if descriptor.name != "graph":
            _copy_field(light, descriptor, value)
    for descriptor, value in model.graph.ListFields():
        if descriptor.name != "initializer":
            _copy_field(light.graph, descriptor, value)
    return light


def _copy_field(target, descriptor, value) -> None:
    if descriptor.is_repeated:
        getattr(target, descriptor.name).extend(value)
    elif descriptor.message_type is not None:
        getattr(target, descriptor.name).CopyFrom(value)
    else:
        setattr(target, descriptor.name, value)


def _stored(tensor: TensorProto, data, data_name: str,
            linked: dict[str, str] | None) -> TensorProto:
    """The tensor as written: external in `data` (or in a linked source file), or
    inline when small."""
    if not is_external(tensor) and tensor.ByteSize() < MIN_BYTES + 64:
        return tensor
    light = TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                        doc_string=tensor.doc_string)
    if is_external(tensor) and linked is not None:
        name = _linked(_info(tensor)["location"], Path(data.name).parent, linked)
        if name is not None:
            info = _info(tensor)
            _set_info(light, name, int(info.get("offset", 0)), length(tensor, info))
            return light
    offset = _pad(data)
    if is_external(tensor) and linked is HOLES:
        data.seek(offset + length(tensor))
        data.truncate()
    elif is_external(tensor):
        _copy_bytes(tensor, data)
    elif tensor.HasField("raw_data"):
        data.write(tensor.raw_data)
    else:
        data.write(np.ascontiguousarray(numpy_helper.to_array(tensor)).tobytes())
    _set_info(light, data_name, offset, data.tell() - offset)
    return light


def _copy_bytes(tensor: TensorProto, data) -> None:
    info = _info(tensor)
    offset, left = int(info.get("offset", 0)), length(tensor, info)
    with open(info["location"], "rb") as source:
        source.seek(offset)
        while left > 0:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise OSError(f"external data of {tensor.name!r} ends early")
            data.write(chunk)
            left -= len(chunk)


def _linked(source: str, folder: Path, linked: dict[str, str]) -> str | None:
    """The name of a hard link to `source` in `folder` (made once), or None."""
    if linked is HOLES:
        return None
    if source not in linked:
        name = f"linked{len(linked)}.data"
        try:
            os.link(os.path.realpath(source), folder / name)
        except OSError:
            return None
        linked[source] = name
    return linked[source]


@contextlib.contextmanager
def on_disk(model: ModelProto, holes: bool = False) -> Iterator[str]:
    """A temporary path holding the model with its tensors as external data (source
    files hard-linked where possible): what onnxruntime reads past 2 GB. `holes`:
    external tensors are left as holes of their size (for the ONNX checker, which
    reads no values and refuses hard links)."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as tmp:
        path = Path(tmp) / "model.onnx"
        write(model, path, "model.onnx.data", link=HOLES if holes else True)
        yield str(path)


def check(model: ModelProto, full_check: bool = False) -> None:
    """The ONNX checker on a model with external tensors or past 2 GB (by path)."""
    with on_disk(model, holes=True) as path:
        onnx.checker.check_model(path, full_check=full_check)


def check_serialized(model: ModelProto, data: bytes | str, full_check: bool = False) -> None:
    """The ONNX checker on a model as `targets.onnxruntime.serialized` gives it: on its
    bytes, or by path when it is too large for them."""
    if isinstance(data, bytes):
        onnx.checker.check_model(data, full_check=full_check)
    else:
        check(model, full_check=full_check)
