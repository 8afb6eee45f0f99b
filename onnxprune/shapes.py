"""Shapes: ONNX shape inference, completed by probing onnxruntime runs where it
leaves sizes unknown, and the concrete input shapes used for sample runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import onnx
from onnx import ModelProto

from .errors import InputError, ModelError, first_line
from .probe import probe_model, probe_session

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


class Prober:
    """Runs a model in onnxruntime to read the sizes ONNX inference leaves open: once
    per set of input shapes, fetching every tensor whose inferred shape is not all
    integers (and that something reads), for every caller that asks. Large float
    weights are generated as zeros in the probe (sizes do not depend on them), so the
    session is small to build; each run's session is let go after it, so the memory
    its generated weights took is returned."""

    def __init__(self, model: ModelProto, runnable: Callable[[], ModelProto]):
        table = shape_table(infer_shapes(model))
        self.names = list(dict.fromkeys(_open(model, table, _static)))
        self._runnable = runnable
        self._probe: ModelProto | None = None
        self._runs: dict[tuple, dict[str, Shape]] = {}

    def shapes(self, inputs: dict[str, tuple[int, ...]]) -> dict[str, Shape]:
        """Sizes of `names` in a run at these input shapes (empty if the run fails)."""
        key = tuple(sorted((name, tuple(shape)) for name, shape in inputs.items()))
        if key not in self._runs:
            self._runs[key] = self._run(inputs) if self.names else {}
        return self._runs[key]

    def _run(self, inputs: dict[str, tuple[int, ...]]) -> dict[str, Shape]:
        try:
            if self._probe is None:
                self._probe = probe_model(self._runnable(), self.names)
            session = probe_session(self._probe)
            values = session.run(self.names, _zeros_like_inputs(self._probe, inputs))
            del session
        except Exception:
            return {}
        return {name: tuple(np.shape(v)) for name, v in zip(self.names, values, strict=True)}


Probe = Prober | Callable[[], ModelProto] | None


def prober_for(model: ModelProto, probe: Probe) -> Prober | None:
    """A Prober as given, or one over `probe()`, the model made runnable."""
    if probe is None or isinstance(probe, Prober):
        return probe
    return Prober(model, probe)


def infer_shape_table(model: ModelProto,
                      overrides: dict[str, tuple[int, ...]] | None = None,
                      runnable: Probe = None) -> dict[str, Shape]:
    """Shapes from ONNX inference. Sizes it leaves unknown (run-time computed Reshape
    targets, for example) are probed: the model is run in onnxruntime with two
    different concrete input shapes, and a size equal in both runs is static."""
    table = shape_table(infer_shapes(model))
    unknown = _open(model, table, _complete)
    prober = prober_for(model, runnable)
    if not unknown or prober is None:
        return table
    first = sample_shapes(model, overrides)
    reference = prober.shapes(first)
    for only_leading in (False, True):
        other = prober.shapes(_varied(model, first, only_leading))
        if other:
            for name in unknown:
                table[name] = _probed(table.get(name), reference.get(name), other.get(name))
            break
    return table


def concrete_shape_table(model: ModelProto, shapes: dict[str, tuple[int, ...]],
                         runnable: Probe = None) -> dict[str, Shape]:
    """Shapes at concrete input shapes: ONNX inference, completed where it stops (ops
    it does not know, run-time shapes) by one onnxruntime run."""
    table = shape_table(infer_shapes(with_input_shapes(model, shapes)))
    read = _read(model)
    unknown = [o for node in model.graph.node for o in node.output
               if o and not _static(table.get(o)) and o in read]
    prober = prober_for(model, runnable)
    if unknown and prober is not None:
        probed = prober.shapes(shapes)
        table.update({name: probed[name] for name in unknown if name in probed})
    return table


def _open(model: ModelProto, table: dict[str, Shape], settled: Callable[[Shape], bool]
          ) -> list[str]:
    """Tensors that something reads whose inferred shape is not `settled`, or missing."""
    read = _read(model)
    names = [n for n, shape in table.items() if not settled(shape)]
    names += [o for node in model.graph.node for o in node.output if o and o not in table]
    return [n for n in names if n in read]


def _read(model: ModelProto) -> set[str]:
    """Names some node reads (subgraphs included) or the graph outputs: the sizes of
    other tensors (an unused Dropout mask) matter to nothing."""
    names = {o.name for o in model.graph.output}
    stack = list(model.graph.node)
    while stack:
        node = stack.pop()
        names.update(node.input)
        for attr in node.attribute:
            stack.extend(attr.g.node if attr.HasField("g") else [])
            stack.extend(n for g in attr.graphs for n in g.node)
    return names


def batch_periods(model: ModelProto, overrides: dict[str, tuple[int, ...]] | None,
                  runnable: Probe) -> dict[str, tuple]:
    """For tensors with run-time sizes, per axis: the size at batch 1 when the size is
    proportional to the batch (measured at batch 1 and 2), else None."""
    table = shape_table(infer_shapes(model))
    names = [name for name, shape in table.items()
             if shape is not None and not _static(shape)]
    prober = prober_for(model, runnable)
    if not names or prober is None:
        return {}
    first = sample_shapes(model, overrides)
    first = {name: (1,) + shape[1:] if _dynamic_axes(model, name)[:1] == [True] else shape
             for name, shape in first.items()}
    one = prober.shapes(first)
    two = prober.shapes(_varied(model, first, only_leading=True))
    periods = {}
    for name in names:
        if name in one and name in two and len(one[name]) == len(two[name]):
            periods[name] = tuple(a if b == 2 * a and a > 0 else None
                                  for a, b in zip(one[name], two[name], strict=True))
    return periods


def _static(shape: Shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _varied(model: ModelProto, shapes: dict[str, tuple[int, ...]], only_leading: bool
            ) -> dict[str, tuple[int, ...]]:
    """Input shapes with dynamic axes doubled (all of them, or only the leading one)."""
    varied = {}
    for name, shape in shapes.items():
        dynamic = _dynamic_axes(model, name)
        varied[name] = tuple(d * 2 if dynamic[k] and (k == 0 or not only_leading) else d
                             for k, d in enumerate(shape))
    return varied


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
    and 64 for other symbolic axes (128 for one named as a key/value cache's joined
    length, the past's 64 positions and 64 new ones)."""
    from .cache import cache_pairs, sample_sizes

    overrides = overrides or {}
    named = sample_sizes(model, cache_pairs(model))
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
            shape = tuple(d if d > 0 else (1 if axis == 0 else named.get(
                dims[axis].dim_param, DEFAULT_DYNAMIC_DIM)) for axis, d in enumerate(declared))
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
