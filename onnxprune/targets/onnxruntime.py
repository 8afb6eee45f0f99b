"""The one way to build an onnxruntime session: `session()`. No other module of the
package imports onnxruntime (a test holds every module to that).

    from onnxprune.targets.onnxruntime import providers, session
    sess = session(model)                              # CPU, basic optimization, quiet
    sess = session(model, outputs=["h"])               # intermediate tensor h fetched too
    sess = session(data, optimization="none", initializers={"W": w})  # W replaced
    sess = session("sparse.onnx", providers=providers(["TensorrtExecutionProvider"]),
                   optimization="all", log_severity=ERRORS)

Settings that change numerics or speed belong to the caller; the callers use:

    caller                                      optimization  threads (intra, inter)  errors
    verify.run / run_source / check_written,    basic         default                 explained
      compare, calibrate.collect, sparsity
      statistics (intermediate outputs)
    refit, criteria.sensitivity (initializer    none          default                 raw
      overrides: optimizations would fold the
      model's own initializers first)
    shapes probe (probe.probe_session)          none          default                 raw
    bench.timing_session (bench, OrtTimer:      all           --threads, 1            explained
      latency tables and budgets, reports;
      one provider, no CPU fallback)
    deployment of a sparse model (user code,    all           as wanted               raw
      providers(): TensorRT options)

"default" threads are onnxruntime's own unless `default_threads(n)` holds them to n in
this process (`--threads` with `--workers`: each process's numerical threads).

A model read from a path (a large or external-data model: `serialized`) is run
without weight prepacking, so onnxruntime holds its weights once.

Every caller in the package logs fatal messages only (`QUIET`, the default): failures
reach the user as one error line (`explain`: a `ModelError` naming the op onnxruntime
lacks, or its first line). Thread spinning is onnxruntime's default everywhere unless
`spinning` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import ModelProto

from ..datafiles import on_disk
from ..errors import InputError, ModelError, first_line
from ..external import has_external
from ..model import EXTERNAL_DATA_THRESHOLD, _weight_bytes
from . import tensorrt

Session = ort.InferenceSession
Optimization = Literal["none", "basic", "extended", "all"]
Provider = str | tuple[str, dict[str, str]]

CPU = "CPUExecutionProvider"
PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU)
QUIET = 4  # fatal messages only
ERRORS = 3
LEVELS = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
_DEFAULT_THREADS = [0]  # intra-op threads of sessions made with threads=0 (0: onnxruntime's)


@contextlib.contextmanager
def default_threads(threads: int) -> Iterator[None]:
    """Sessions made meanwhile with `threads=0` use `threads` intra-op threads (0:
    onnxruntime's default)."""
    before, _DEFAULT_THREADS[0] = _DEFAULT_THREADS[0], threads
    try:
        yield
    finally:
        _DEFAULT_THREADS[0] = before


def session(model: ModelProto | bytes | str | os.PathLike, *,
            providers: Sequence[Provider] = (CPU,), optimization: Optimization = "basic",
            threads: int = 0, inter_threads: int = 0, spinning: bool | None = None,
            log_severity: int = QUIET, initializers: Mapping[str, np.ndarray] | None = None,
            outputs: Sequence[str] = (), explain: bool = True) -> Session:
    """An onnxruntime session for a model, its serialized bytes, or its path (external
    data beside it); a large ModelProto is passed through a temporary file.

    `providers`: names or (name, options) pairs, in order (see `providers()`).
    `threads`, `inter_threads`: intra- and inter-op threads (0: onnxruntime's default).
    `spinning`: whether idle worker threads spin (None: onnxruntime's default).
    `initializers`: arrays that replace the model's initializers of those names (kept
    alive with the session). `outputs`: intermediate tensors to fetch as well (a
    ModelProto only). `explain`: a creation failure raises `ModelError` with
    `runtime_failure`'s line; otherwise onnxruntime's exception propagates."""
    if optimization not in LEVELS:
        raise InputError(f"optimization must be one of {', '.join(LEVELS)}")
    options = _options(optimization, threads, inter_threads, spinning, log_severity)
    values = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
              for name, value in (initializers or {}).items()}
    for name, value in values.items():
        options.add_initializer(name, value)
    proto = with_outputs(model, outputs) if isinstance(model, ModelProto) else None
    if outputs and proto is None:
        raise TypeError("extra outputs need the model as a ModelProto")
    source = serialized(proto) if proto is not None else contextlib.nullcontext(
        os.fspath(model) if isinstance(model, os.PathLike) else model)
    with source as data:
        if isinstance(data, str):  # large or external: weights are not packed twice
            options.add_session_config_entry("session.disable_prepacking", "1")
        try:
            sess = ort.InferenceSession(data, options, providers=list(providers))
        except Exception as exc:
            if explain:
                raise ModelError(runtime_failure(exc, proto)) from None
            raise
    if values:
        sess._replaced_weights = values  # the session reads them; keep them alive with it
    return sess


def _options(optimization: Optimization, threads: int, inter_threads: int,
             spinning: bool | None, log_severity: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = log_severity
    options.graph_optimization_level = LEVELS[optimization]
    if inter_threads:
        options.inter_op_num_threads = inter_threads
    threads = threads or _DEFAULT_THREADS[0]
    if threads:
        options.intra_op_num_threads = threads
    if spinning is not None:
        for pool in ("intra_op", "inter_op"):
            options.add_session_config_entry(f"session.{pool}.allow_spinning",
                                             "1" if spinning else "0")
    return options


def with_outputs(model: ModelProto, names: Sequence[str]) -> ModelProto:
    """The model (a copy when `names` adds any) that also returns the named tensors."""
    present = {o.name for o in model.graph.output}
    extra = [name for name in names if name not in present]
    if not extra:
        return model
    probe = ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in extra)
    return probe


@contextlib.contextmanager
def serialized(model: ModelProto) -> Iterator[bytes | str]:
    """The model as bytes, or as a temporary path with external data when it is too
    large for one protobuf message or its weights are in external files (read lazily:
    `external`); serialized once for every consumer."""
    if _weight_bytes(model) < EXTERNAL_DATA_THRESHOLD and not has_external(model):
        yield model.SerializeToString()
        return
    with on_disk(model) as path:
        yield path


# Domains whose operators onnxruntime implements (others need a custom-op library).
RUNTIME_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                   "com.microsoft.experimental", "ai.onnx.training",
                   "ai.onnx.preview.training", "com.ms.internal.nhwc"}
UNREGISTERED = re.compile(r"([\w.]*):(\w+)\(-?\d+\) is not a registered function/op")


def runtime_failure(exc: BaseException, model: ModelProto | None = None) -> str:
    """Why onnxruntime cannot load or run a model, in one line: the operator and
    domain it lacks when that is the cause."""
    found = UNREGISTERED.search(str(exc))
    missing = (found.group(2), found.group(1)) if found else foreign_op(model)
    if missing:
        return f"onnxruntime cannot run op {missing[0]} (domain {missing[1] or 'ai.onnx'})"
    return f"onnxruntime cannot load the model: {first_line(exc)}"


def foreign_op(model: ModelProto | None) -> tuple[str, str] | None:
    """The first node of a domain onnxruntime lacks (model-local functions aside)."""
    if model is None:
        return None
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in local:
            return node.op_type, node.domain
    return None


def check_provider(provider: str) -> None:
    """Refuse an execution provider this onnxruntime build does not have."""
    available = ort.get_available_providers()
    if provider not in available:
        raise InputError(f"execution provider {provider!r} is not available; this "
                         f"onnxruntime has {', '.join(available)}")


def providers(wanted: list[str] | None = None,
              tensorrt_options: dict[str, str] | None = None) -> list[Provider]:
    """Providers for a session: `wanted` (each must be available) or the preferred
    available ones, each with its options (TensorRT: `tensorrt.provider_options()`,
    FP16 and sparse weights on), then CPU."""
    available = ort.get_available_providers()
    for name in wanted or ():
        check_provider(name)
    chosen = list(wanted) if wanted else [name for name in PREFERRED if name in available]
    if CPU not in chosen:
        chosen.append(CPU)
    options = {"TensorrtExecutionProvider": tensorrt_options or tensorrt.provider_options()}
    return [(name, options[name]) if name in options else name for name in chosen]
