"""Calibration data and activation statistics from onnxruntime.

Data: an `.npz` file with one array per model input (first axis = samples), a
directory of such files, a Python iterable of feed dicts, or an onnxruntime
`CalibrationDataReader`. Statistics are streamed batch by batch: per channel of
the requested (tensor, axis) slots, the mean, mean |x|, mean x², variance and the
fraction of zeros (APoZ); tensors are fetched in several passes when too many are
asked for at once, so memory stays bounded.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto

from .errors import InputError, first_line
from .images import ImageOptions, image_files
from .images import load as load_images
from .moments import Moments
from .shapes import input_specs

Feeds = dict[str, np.ndarray]
CalibrationSource = str | os.PathLike | Iterable[Feeds] | object
PASS_BUDGET_BYTES = 512 * 1024 * 1024
LABELS = "labels"  # an .npz array of class indices (when no input has that name)


def batches(source: CalibrationSource, model: ModelProto, samples: int | None = None,
            batch_size: int = 8, images: ImageOptions | None = None
            ) -> Callable[[], Iterator[Feeds]]:
    """A re-iterable stream of validated feed batches (at most `samples` samples); a
    folder of images feeds a model with one image input, preprocessed by `images`."""
    if samples is not None and samples < 1:
        raise InputError(f"--calib-samples must be at least 1, got {samples}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    specs = {spec.name: spec for spec in input_specs(model)}
    if isinstance(source, (str, os.PathLike)):
        arrays = read_arrays(source, model, images)
        if LABELS not in specs:
            arrays.pop(LABELS, None)
        arrays = check_arrays(arrays, model)
        fixed = {_declared(spec)[0] for spec in specs.values() if _declared(spec)}
        size = fixed.pop() if len(fixed) == 1 and None not in fixed else batch_size
        return lambda: _slices(arrays, samples, size)
    cached = list(_feeds_of(source, specs, samples))
    if not cached:
        raise InputError("calibration data is empty")
    return lambda: iter(cached)


def labels(source: CalibrationSource, model: ModelProto, samples: int | None = None,
           images: ImageOptions | None = None) -> np.ndarray | None:
    """The integer `labels` of an .npz calibration source, one per sample (its first
    `samples`), or None (no such array, a model input of that name, other sources)."""
    if not isinstance(source, (str, os.PathLike)) or \
            (Path(source).is_dir() and not any(Path(source).glob("*.npz"))):
        return None  # an iterable, a reader or images: no labels
    arrays = read_arrays(source, model, images)
    names = {spec.name for spec in input_specs(model)}
    if LABELS not in arrays or LABELS in names:
        return None
    found = arrays.pop(LABELS)
    count = len(arrays[next(iter(sorted(names)))]) if names & set(arrays) else None
    if found.ndim != 1 or found.dtype.kind not in "iu" or len(found) != count:
        raise InputError(f"calibration {LABELS!r} must be one integer class index per "
                         f"sample ({count} samples), not {found.dtype} of shape "
                         f"{list(found.shape)}")
    return found[:samples] if samples is not None else found


def read_arrays(source: str | os.PathLike, model: ModelProto,
                images: ImageOptions | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, a folder of them or a folder of images, unchecked."""
    specs = {spec.name: spec for spec in input_specs(model)}
    return _load_arrays(Path(source), specs, images or ImageOptions())


def check_arrays(arrays: dict[str, np.ndarray], model: ModelProto) -> dict[str, np.ndarray]:
    """Refuse arrays that do not fit the model's inputs (names, ranks, static sizes,
    dtypes, sample counts) or hold NaN or infinity; returns them."""
    specs = {spec.name: spec for spec in input_specs(model)}
    for name in arrays:
        _check_input(name, arrays[name], specs)
        check_finite(name, arrays[name])
    _check_complete(arrays, specs)
    return arrays


def _load_arrays(path: Path, specs: dict, images: ImageOptions) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(f"{path}: no such calibration file or directory")
    files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
    if not files and path.is_dir() and image_files(path):
        if len(specs) != 1:
            raise InputError(f"{path}: images can feed a model with one input; this one has "
                             f"{', '.join(specs)}")
        name, spec = next(iter(specs.items()))
        return {name: load_images(path, spec, images)}
    if not files:
        raise InputError(f"{path}: no .npz or image files")
    parts: dict[str, list[np.ndarray]] = {}
    for file in files:
        if not zipfile.is_zipfile(file):
            raise InputError(f"{file}: not an .npz file (a zip archive of arrays, as "
                             "numpy.savez writes)")
        try:
            with np.load(file, allow_pickle=False) as data:
                for name in data.files:
                    parts.setdefault(name, []).append(data[name])
        except Exception as exc:
            raise InputError(f"{file}: not a readable .npz file ({exc})") from None
    try:
        return {name: np.concatenate(arrays) for name, arrays in parts.items()}
    except ValueError as exc:
        raise InputError(f"{path}: .npz files disagree on shapes ({exc})") from None


def _check_complete(arrays: dict, specs: dict) -> None:
    missing = sorted(set(specs) - set(arrays))
    if missing:
        raise InputError(f"calibration data has no array for input {missing[0]!r}; the "
                         f"model's inputs are {', '.join(specs)}")
    counts = {name: len(arrays[name]) for name in specs}
    if len(set(counts.values())) > 1:
        raise InputError(f"calibration inputs hold different numbers of samples: {counts}")
    if not any(counts.values()):
        raise InputError(f"calibration data holds no samples (input {next(iter(specs))!r} "
                         "has 0 along its first axis)")


def not_running(exc: BaseException) -> InputError:
    """The error for a model that onnxruntime cannot run on the calibration data."""
    return InputError(f"the model does not run on the calibration data: {first_line(exc)}")


def check_finite(name: str, value: np.ndarray, first_sample: int = 0, chunk: int = 64
                 ) -> None:
    """Refuse NaN or infinity in a floating-point input, naming the first sample that
    holds one (samples along the first axis, counted from `first_sample`)."""
    if value.dtype.kind not in "fc" or value.size == 0:
        return
    samples = value.reshape(1, -1) if value.ndim == 0 else value.reshape(len(value), -1)
    for start in range(0, len(samples), chunk):
        bad = ~np.isfinite(samples[start:start + chunk]).all(axis=1)
        if bad.any():
            index = start + int(np.argmax(bad))
            what = "NaN" if np.isnan(samples[index]).any() else "infinite values"
            raise InputError(f"calibration input {name!r}, sample {first_sample + index}: "
                             f"holds {what}; calibration data must be finite")


def _check_input(name: str, value: np.ndarray, specs: dict, first: int = 1) -> None:
    """Name, rank, static sizes (from axis `first` on) and dtype kind must fit."""
    if name not in specs:
        raise InputError(f"calibration data has an array {name!r}, but the model has no such "
                         f"input (inputs: {', '.join(specs)})")
    dims = _declared(specs[name])
    shown = ["?" if d is None else d for d in dims]
    if value.ndim != len(dims) or any(
            want is not None and size != want
            for size, want in zip(value.shape[first:], dims[first:], strict=True)):
        where = " (first axis: samples)" if first else ""
        raise InputError(f"calibration input {name!r} has shape {list(value.shape)}; the model "
                         f"expects {shown}{where}")
    expected = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(specs[name].type.tensor_type
                                                               .elem_type))
    if expected.kind != value.dtype.kind:
        raise InputError(f"calibration input {name!r} is {value.dtype}; the model expects "
                         f"{expected}")


def _declared(spec: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in spec.type.tensor_type.shape.dim]


def _slices(arrays: dict[str, np.ndarray], samples: int | None, size: int) -> Iterator[Feeds]:
    total = len(next(iter(arrays.values())))
    total = total if samples is None else min(total, samples)
    for start in range(0, total, size):
        yield {name: values[start:min(start + size, total)] for name, values in arrays.items()}


def _feeds_of(source, specs: dict, samples: int | None) -> Iterator[Feeds]:
    reader = iter(lambda: source.get_next(), None) if hasattr(source, "get_next") else source
    seen = 0
    for feeds in reader:
        if not isinstance(feeds, dict):
            raise InputError("calibration batches must be dicts of input name to array")
        feeds = {name: np.asarray(value) for name, value in feeds.items()}
        for name, value in feeds.items():
            _check_input(name, value, specs, first=0)
            check_finite(name, value, seen)
        _check_complete(feeds, specs)
        yield feeds
        seen += len(next(iter(feeds.values())))
        if samples is not None and seen >= samples:
            return


def collect(model: ModelProto, slots: list[tuple[str, int]],
            stream: Callable[[], Iterator[Feeds]], progress: Callable[[int], None] | None = None,
            budget: int = PASS_BUDGET_BYTES) -> dict[tuple[str, int], Moments]:
    """Per-channel statistics of the slots' tensors over the calibration stream."""
    from .targets.onnxruntime import session

    names = sorted({name for name, _ in slots})
    stats = {slot: Moments() for slot in slots}
    for chunk in _passes(model, names, stream, budget):
        sess = session(model, outputs=chunk)
        for feeds in stream():
            try:
                values = sess.run(chunk, feeds)
            except Exception as exc:
                raise not_running(exc) from None
            for name, value in zip(chunk, values, strict=True):
                for slot in (s for s in slots if s[0] == name):
                    stats[slot].add_channels(value, slot[1])
            if progress:
                progress(len(next(iter(feeds.values()))))
    return stats


def _passes(model: ModelProto, names: list[str], stream, budget: int) -> list[list[str]]:
    """Split the tensors into passes whose outputs for one batch fit the budget (sizes
    from shape inference at the first batch's input shapes)."""
    from .shapes import infer_shapes, shape_table, with_input_shapes

    first = next(stream())
    table = shape_table(infer_shapes(with_input_shapes(
        model, {name: value.shape for name, value in first.items()})))
    passes, current, used = [], [], 0
    for name in names:
        shape = table.get(name) or ()
        size = 8 * int(np.prod([d if isinstance(d, int) else 1 for d in shape]))
        if current and used + size > budget:
            passes.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    return passes + [current] if current else passes
