"""Shapes: ONNX shape inference, completed by probing onnxruntime runs where it
leaves sizes unknown, and the concrete input shapes used for sample runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import ModelProto

from .errors import InputError, ModelError, first_line

Dim = int | str | None
Shape = tuple[Dim, ...] | None
DEFAULT_DYNAMIC_DIM = 64


def with_input_shapes(model: ModelProto, shapes: dict[str, tuple[int, ...]]) -> ModelProto:
    """A copy whose graph inputs are declared with concrete shapes."""
    fixed = ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for size in shapes[value.name]:
                dims.add().dim_value = int(size)
    return fixed


def infer_shapes(model: ModelProto, strict: bool = False) -> ModelProto:
    """ONNX shape inference with data propagation; raises ModelError when strict fails."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
    except Exception as exc:
        raise ModelError(f"shape inference failed: {first_line(exc)}") from None


def infer_shape_table(model: ModelProto,
                      overrides: dict[str, tuple[int, ...]] | None = None,
                      runnable: Callable[[], ModelProto] | None = None) -> dict[str, Shape]:
    """Shapes from ONNX inference. Sizes it leaves unknown (run-time computed Reshape
    targets, for example) are probed: `runnable()` is run in onnxruntime with two
    different concrete input shapes, and a size equal in both runs is static."""
    table = shape_table(infer_shapes(model))
    unknown = [name for name, shape in table.items() if not _complete(shape)]
    unknown += [o for node in model.graph.node for o in node.output if o and o not in table]
    if not unknown or runnable is None:
        return table
    runnable_model = runnable()
    first = sample_shapes(model, overrides)
    reference = _run_shapes(runnable_model, first, unknown)
    for only_leading in (False, True):
        other = _run_shapes(runnable_model, _varied(model, first, only_leading), unknown)
        if other:
            for name in unknown:
                table[name] = _probed(table.get(name), reference.get(name), other.get(name))
            break
    return table


def concrete_shape_table(model: ModelProto, shapes: dict[str, tuple[int, ...]],
                         runnable: Callable[[], ModelProto] | None = None
                         ) -> dict[str, Shape]:
    """Shapes at concrete input shapes: ONNX inference, completed where it stops (ops
    it does not know, run-time shapes) by one onnxruntime run of `runnable()`."""
    table = shape_table(infer_shapes(with_input_shapes(model, shapes)))
    unknown = [o for node in model.graph.node for o in node.output
               if o and not all(isinstance(d, int) for d in (table.get(o) or (None,)))]
    if unknown and runnable is not None:
        table.update(_run_shapes(runnable(), shapes, unknown))
    return table


def batch_periods(model: ModelProto, overrides: dict[str, tuple[int, ...]] | None,
                  runnable: Callable[[], ModelProto]) -> dict[str, tuple]:
    """For tensors with run-time sizes, per axis: the size at batch 1 when the size is
    proportional to the batch (measured at batch 1 and 2), else None."""
    table = shape_table(infer_shapes(model))
    names = [name for name, shape in table.items()
             if shape is not None and not all(isinstance(d, int) for d in shape)]
    if not names:
        return {}
    first = sample_shapes(model, overrides)
    first = {name: (1,) + shape[1:] if _dynamic_axes(model, name)[:1] == [True] else shape
             for name, shape in first.items()}
    executable = runnable()
    one = _run_shapes(executable, first, names)
    two = _run_shapes(executable, _varied(model, first, only_leading=True), names)
    periods = {}
    for name in names:
        if name in one and name in two and len(one[name]) == len(two[name]):
            periods[name] = tuple(a if b == 2 * a and a > 0 else None
                                  for a, b in zip(one[name], two[name], strict=True))
    return periods


def _varied(model: ModelProto, shapes: dict[str, tuple[int, ...]], only_leading: bool
            ) -> dict[str, tuple[int, ...]]:
    """Input shapes with dynamic axes doubled (all of them, or only the leading one)."""
    varied = {}
    for name, shape in shapes.items():
        dynamic = _dynamic_axes(model, name)
        varied[name] = tuple(d * 2 if dynamic[k] and (k == 0 or not only_leading) else d
                             for k, d in enumerate(shape))
    return varied


def _run_shapes(model: ModelProto, shapes: dict[str, tuple[int, ...]], names: list[str]
                ) -> dict[str, Shape]:
    """Shapes of the named tensors in one onnxruntime run (empty if the run fails)."""
    import onnxruntime as ort

    probe = ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        values = session.run(names, _zeros_like_inputs(model, shapes))
    except Exception:
        return {}
    return {name: tuple(np.shape(v)) for name, v in zip(names, values, strict=True)}


def _zeros_like_inputs(model: ModelProto, shapes: dict[str, tuple[int, ...]]
                       ) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in input_specs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(spec.type.tensor_type.elem_type)
        feeds[spec.name] = np.zeros(shapes[spec.name], dtype)
    return feeds


def _complete(shape: Shape) -> bool:
    """No axis of unknown size (ONNX names the sizes it could not infer `unk__N`)."""
    return shape is not None and all(
        d is not None and not (isinstance(d, str) and d.startswith("unk__")) for d in shape)


def _probed(shape: Shape, first: Shape, second: Shape) -> Shape:
    if first is None or second is None or len(first) != len(second):
        return shape
    if shape is None or len(shape) != len(first):
        shape = (None,) * len(first)
    return tuple(a if a == b and isinstance(a, int) and (d is None or isinstance(d, str))
                 else d for d, a, b in zip(shape, first, second, strict=True))


def _dynamic_axes(model: ModelProto, name: str) -> list[bool]:
    for value in model.graph.input:
        if value.name == name:
            return [not (d.HasField("dim_value") and d.dim_value > 0)
                    for d in value.type.tensor_type.shape.dim]
    return []


def input_specs(model: ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (initializers excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def sample_shapes(model: ModelProto, overrides: dict[str, tuple[int, ...]] | None = None
                  ) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes: declared sizes, overrides, 1 for a leading symbolic axis
    and 64 for other symbolic axes."""
    overrides = overrides or {}
    shapes = {}
    for spec in input_specs(model):
        dims = spec.type.tensor_type.shape.dim
        declared = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
        if spec.name in overrides:
            shape = tuple(overrides[spec.name])
            if len(shape) != len(declared) or any(
                    d > 0 and d != s for d, s in zip(declared, shape, strict=True)):
                raise InputError(f"input shape {shape} does not fit input {spec.name!r} "
                                 f"declared as {_dims_text(dims)}")
        else:
            shape = tuple(d if d > 0 else (1 if axis == 0 else DEFAULT_DYNAMIC_DIM)
                          for axis, d in enumerate(declared))
        shapes[spec.name] = shape
    unknown = set(overrides) - set(shapes)
    if unknown:
        raise InputError(f"no model input named {sorted(unknown)[0]!r}; inputs are "
                         f"{', '.join(shapes)}")
    return shapes


def _dims_text(dims) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                           for d in dims) + "]"


def shape_table(model: ModelProto) -> dict[str, Shape]:
    """Map every typed tensor name to its shape (ints, symbols, or None per axis)."""
    table: dict[str, Shape] = {}
    values: Iterable = list(model.graph.input) + list(model.graph.value_info) + list(
        model.graph.output)
    for value in values:
        ttype = value.type.tensor_type
        if not ttype.HasField("shape"):
            continue
        table[value.name] = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in ttype.shape.dim)
    for init in model.graph.initializer:
        table[init.name] = tuple(init.dims)
    return table
