"""Weights in external data files: read lazily, written back in chunks.

A model read from a file with external data keeps its tensors *unloaded*: each one
names its file by absolute path (`location`), offset and length, and is read through
`array()`, a read-only memory map. Large values made later (sliced, refit, zeroed)
are *spilled* to a scratch file of this process and referenced the same way, so a
model never holds its weights in memory twice. Writing them back: `datafiles`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
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
    folder = Path(os.path.abspath(path)).parent  # as onnx does: links not followed
    for tensor in tensors(proto):
        if is_external(tensor):
            _anchor(tensor, folder, path)
            INPUTS.add(_info(tensor)["location"])
    return proto


INPUTS: set[str] = set()  # external data files read in this process: never written over


def refuse_input(target: Path, sources: set[str] | None = None) -> None:
    """Refuse to write `target` when it is an input model's external data file (one of
    `sources`, or of the models read so far)."""
    from .files import same_file

    for source in INPUTS if sources is None else sources:
        if same_file(target, source):
            raise InputError(f"{target}: is the external data of an input model; "
                             "refusing to overwrite it")


def check_targets(model: str | os.PathLike, output: str | os.PathLike) -> None:
    """Before any work: refuse an output whose file or data file beside it is external
    data of the model file `model` (a model file past 64 MB holds its own weights and
    is not read twice for this)."""
    path = Path(model)
    try:
        if path.stat().st_size > 64 << 20:
            return
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return  # refused when it is read, with its own reason
    folder = Path(os.path.abspath(path)).parent
    sources = {os.path.normpath(folder / _info(t).get("location", ""))
               for t in tensors(proto) if is_external(t)}
    for target in (Path(output), Path(f"{output}.data")):
        refuse_input(target, sources)


def _anchor(tensor: TensorProto, folder: Path, path: Path) -> None:
    info = _info(tensor)
    location = info.get("location", "")
    source = Path(os.path.normpath(folder / location))  # a link in the folder may point out
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


def peek(tensor: gs.Constant) -> np.ndarray:
    """A constant's values, loaded anew when they are lazy (external ones through a map
    of their own, whose pages leave memory with it): the graph keeps none of them."""
    values = getattr(tensor, "_values", None)
    if isinstance(values, np.memmap) and hasattr(values, "lazy_source"):
        values = values.lazy_source
    return values.load() if isinstance(values, LazyValues) else np.asarray(tensor.values)


def dtype_of(tensor: gs.Constant) -> np.dtype:
    """A constant's numpy dtype, without reading its values (unless onnx-graphsurgeon
    has no numpy type for it: then as its values are read)."""
    dtype = tensor.dtype
    return dtype if isinstance(dtype, np.dtype) else np.asarray(tensor.values).dtype


def fresh(values: np.ndarray) -> np.ndarray:
    """A new map of a mapped value (whose pages then leave memory with the new map, not
    with `values`); other values as they are."""
    source = getattr(values, "lazy_source", None)
    return source.load() if isinstance(source, Mapped) else values


def kept_aside(values: np.ndarray, name: str, spilling: bool) -> np.ndarray:
    """With `spilling`, a value of at least `MIN_BYTES` moved to the scratch file and
    read back as a map (held on disk, not in memory); else the value itself."""
    stored = spill(values, name) if spilling and values.nbytes >= MIN_BYTES else None
    return values if stored is None else Mapped(stored).load()


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


_SCRATCH: dict = {}  # this process's scratch file (a forked child makes its own)


def _scratch():
    """The open scratch file of this process, made on first need (removed at exit)."""
    if _SCRATCH.get("pid") != os.getpid():
        folder = Path(tempfile.mkdtemp(prefix="onnxprune-scratch-"))
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH.update(pid=os.getpid(), file=open(folder / "spilled.data", "wb"))  # noqa: SIM115
    return _SCRATCH["file"]


def spill(values: np.ndarray, name: str) -> TensorProto | None:
    """`values` written to this process's scratch file, as an external tensor (None
    for a type onnx cannot store raw: strings, objects)."""
    if values.dtype.kind not in "biuf":
        return None
    from .files import unwritable

    values = np.ascontiguousarray(values)
    try:
        handle = _scratch()
        offset = _pad(handle)
        handle.write(values.reshape(-1).view(np.uint8).data)
        handle.flush()
    except OSError as exc:
        raise unwritable(f"scratch file in {tempfile.gettempdir()}", exc) from None
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
