"""Weights in external data files: read lazily, written back in chunks.

A model read from a file with external data keeps its tensors *unloaded*: each one
names its file by absolute path (`location`), offset and length, and is read through
`array()`, a read-only memory map. Large values made later (sliced, refit, zeroed)
are *spilled* to a scratch file of this process and referenced the same way, so a
model never holds its weights in memory twice. `write()` streams every tensor into
one data file beside the model; `on_disk()` gives onnx and onnxruntime a path to
read (the checker and sessions need one past protobuf's 2 GB limit).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import ModelProto, TensorProto, numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from .errors import InputError

ALIGN = 4096  # offsets of written tensors: page-aligned, so onnxruntime can map them
CHUNK = 64 << 20  # bytes copied at once
MIN_BYTES = 1024  # smaller tensors stay inside the model file


def is_external(tensor: TensorProto) -> bool:
    """Whether a tensor's values live in an external data file."""
    return tensor.data_location == TensorProto.EXTERNAL


def _info(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def tensors(model: ModelProto) -> list[TensorProto]:
    """The main graph's stored tensors: initializers and Constant node values."""
    found = list(model.graph.initializer)
    found += [a.t for n in model.graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value"]
    return found


def has_external(model: ModelProto) -> bool:
    """Whether any stored tensor of the model is external (unloaded)."""
    return any(is_external(t) for t in tensors(model))


def read(path: Path) -> ModelProto:
    """Load a model without its external data; each external tensor then names its
    file by absolute path (checked: inside the model's folder, long enough)."""
    proto = onnx.load(str(path), load_external_data=False)
    folder = path.resolve().parent
    for tensor in tensors(proto):
        if is_external(tensor):
            _anchor(tensor, folder, path)
    return proto


def _anchor(tensor: TensorProto, folder: Path, path: Path) -> None:
    info = _info(tensor)
    location = info.get("location", "")
    source = (folder / location).resolve()
    if not location or Path(location).is_absolute() or folder not in source.parents:
        raise InputError(f"{path}: tensor {tensor.name!r} names external data outside "
                         f"the model's folder ({location!r})")
    if not source.is_file():
        raise InputError(f"{path}: external data file {location} of tensor "
                         f"{tensor.name!r} is missing")
    end = int(info.get("offset", 0)) + length(tensor, info)
    if end > source.stat().st_size:
        raise InputError(f"{path}: external data file {location} is shorter than tensor "
                         f"{tensor.name!r} needs")
    _set_info(tensor, str(source), int(info.get("offset", 0)), length(tensor, info))


def _set_info(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    tensor.data_location = TensorProto.EXTERNAL


def length(tensor: TensorProto, info: dict[str, str] | None = None) -> int:
    """The bytes an external tensor's values take."""
    info = _info(tensor) if info is None else info
    if "length" in info:
        return int(info["length"])
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    return int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(dtype).itemsize


def array(tensor: TensorProto) -> np.ndarray:
    """A tensor's values: a read-only memory map when external, else an array."""
    if not is_external(tensor):
        return numpy_helper.to_array(tensor)
    info = _info(tensor)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    shape = tuple(int(d) for d in tensor.dims)
    if not int(np.prod(shape, dtype=np.int64)):
        return np.zeros(shape, dtype)
    return np.memmap(info["location"], dtype=dtype, mode="r",
                     offset=int(info.get("offset", 0)), shape=shape)


class Mapped(LazyValues):
    """onnx-graphsurgeon's lazy values for an external tensor: loaded as a memory map
    that remembers it (so an unchanged weight is exported as the same reference)."""

    def load(self) -> np.ndarray:
        values = array(self.tensor)
        if isinstance(values, np.memmap):
            values.lazy_source = self
        return values


def map_lazy(graph: gs.Graph) -> None:
    """Make an imported graph's external constants load as memory maps (`Mapped`)."""
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if isinstance(values, LazyValues) and is_external(values.tensor):
            tensor._values = Mapped(values.tensor)


def settle(graph: gs.Graph, to_scratch: bool) -> None:
    """Before export: unchanged memory maps go back to their lazy source (exported as
    the same reference, and unmapped); with `to_scratch`, other values of at least
    `MIN_BYTES` are moved to the scratch file (nothing large stays in memory twice)."""
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if not isinstance(values, np.ndarray):
            continue
        if isinstance(values, np.memmap) and hasattr(values, "lazy_source"):
            tensor._values = values.lazy_source
        elif to_scratch and values.nbytes >= MIN_BYTES and \
                tensor.export_dtype == values.dtype:
            stored = spill(values, tensor.name)
            if stored is not None:
                tensor._values = Mapped(stored)


def _scratch_dir() -> Path:
    if "dir" not in _SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="onnxprune-scratch-"))
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH["dir"] = folder
    return _SCRATCH["dir"]


_SCRATCH: dict = {}


def spill(values: np.ndarray, name: str) -> TensorProto | None:
    """`values` written to this process's scratch file, as an external tensor (None
    for a type onnx cannot store raw: strings, objects)."""
    if values.dtype.kind not in "biuf":
        return None
    values = np.ascontiguousarray(values)
    if "file" not in _SCRATCH:
        _SCRATCH["file"] = open(_scratch_dir() / "spilled.data", "wb")  # noqa: SIM115
    handle = _SCRATCH["file"]
    offset = _pad(handle)
    handle.write(values.reshape(-1).view(np.uint8).data)
    handle.flush()
    tensor = TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(
        values.dtype), dims=values.shape)
    _set_info(tensor, handle.name, offset, values.nbytes)
    return tensor


def _pad(handle) -> int:
    """Pad an open file to the next aligned offset; return it."""
    offset = handle.tell()
    aligned = -(-offset // ALIGN) * ALIGN
    handle.write(b"\0" * (aligned - offset))
    return aligned


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
            os.link(source, folder / name)
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
