"""Fidelity of a pruned model against its original: per-output agreement on
calibration data (or sample inputs), MACs, parameters and an onnxruntime latency
ratio measured in the same run."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from onnx import ModelProto

from . import calibrate
from . import model as model_io
from .cache import cache_pairs, cache_shrunk, prompt_shapes
from .cost import concrete, model_cost
from .errors import InputError, ModelError, first_line
from .shapes import concrete_shape_table, input_specs
from .targets.onnxruntime import session
from .verify import sample_feeds
from .verify.generation import can_generate, generate, prompt_for

if TYPE_CHECKING:
    from .calibrate import CalibrationSource
    from .images import ImageOptions


@dataclass
class OutputFidelity:
    """Agreement of one output over all samples."""

    name: str
    cosine: float
    relative_l2: float
    max_abs_error: float
    top1_agreement: float | None = None


@dataclass
class Comparison:
    """What `onnxprune verify` prints."""

    outputs: list[OutputFidelity] = field(default_factory=list)
    macs_original: int = 0
    macs_pruned: int = 0
    params_original: int = 0
    params_pruned: int = 0
    latency_ratio: float = 0.0
    samples: int = 0
    generation: dict | None = None  # key/value-cache models: greedy tokens of both

    def to_dict(self) -> dict:
        return asdict(self)


def compare(original: ModelProto | str | os.PathLike, pruned: ModelProto | str | os.PathLike,
            calib: CalibrationSource | None = None, samples: int | None = None,
            batch_size: int = 8, runs: int = 20, images: ImageOptions | None = None
            ) -> Comparison:
    """Compare two models on the same inputs (calibration data or seeded samples)."""
    if batch_size < 1 or (samples is not None and samples < 1):
        raise InputError(f"batch size and samples must be at least 1, got {batch_size} and "
                         f"{samples}")
    first, second = model_io.load(original), model_io.load(pruned)
    _check_interface(first, second)
    shrunk = cache_shrunk(first, second)
    if shrunk and calib is not None:
        raise InputError("PRUNED has a smaller key/value cache than ORIGINAL, so the two "
                         "cannot take the same calibration inputs; verify without --calib "
                         "compares a prompt pass and a cached generation")
    stream = calibrate.batches(calib, first, samples, batch_size, images) \
        if calib is not None else (lambda: iter([sample_feeds(first, prompt_shapes(first))]))
    sessions = [session(first), session(second)]
    outputs = [o.name for o in sessions[0].get_outputs()]
    result = Comparison(outputs=_fidelity(sessions, outputs, stream, calib is not None,
                                          second))
    batch = next(stream())
    shapes = {k: v.shape for k, v in batch.items()}
    (result.macs_original, result.params_original), (result.macs_pruned, result.params_pruned) \
        = _cost(first, shapes), _cost(second, {k: v.shape for k, v in
                                                           _own(batch, second).items()})
    result.latency_ratio = _latency(sessions, [batch, _own(batch, second)], runs)
    result.samples = sum(len(next(iter(feeds.values()))) for feeds in stream())
    if can_generate(first) and can_generate(second):
        result.generation = generation_agreement(first, second)
    return result


def _own(feeds: dict[str, np.ndarray], model: ModelProto) -> dict[str, np.ndarray]:
    """`feeds` with the empty cache inputs shaped as `model` declares them."""
    own = dict(feeds)
    for pair in cache_pairs(model):
        if pair.past in own and own[pair.past].shape[pair.axis] == 0:
            value = next(v for v in model.graph.input if v.name == pair.past)
            shape = [d.dim_value if d.HasField("dim_value") else n for d, n in
                     zip(value.type.tensor_type.shape.dim, own[pair.past].shape, strict=True)]
            own[pair.past] = np.zeros(shape, own[pair.past].dtype)
    return own


def generation_agreement(first: ModelProto, second: ModelProto, steps: int = 15) -> dict:
    """Greedy tokens of both models after one seeded prompt: how many agree, and the
    largest relative L2 difference of a step's logits."""
    prompt = prompt_for(first)
    want, got = generate(first, prompt, steps), generate(second, prompt, steps)
    errors = [np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30)
              for a, b in zip(want.logits, got.logits, strict=True)]
    agree = int(np.sum(np.array(want.tokens) == np.array(got.tokens)))
    return {"tokens": len(want.tokens), "agreeing": agree, "original": want.tokens,
            "pruned": got.tokens, "max_logits_relative_l2": float(max(errors))}


def _check_interface(first: ModelProto, second: ModelProto) -> None:
    """Same input and output names, or PRUNED is not a pruned ORIGINAL."""
    for what, names in (("inputs", lambda m: [s.name for s in input_specs(m)]),
                        ("outputs", lambda m: [o.name for o in m.graph.output])):
        if names(first) != names(second):
            raise InputError(f"the two models have different {what}: {names(first)} and "
                             f"{names(second)}; PRUNED must be a pruned version of ORIGINAL")


def _outputs_of(sessions, outputs: list[str], feeds, calibrated: bool,
                pruned: ModelProto):
    """Both models' outputs on one batch; one-line errors naming the model at fault.
    Key/value-cache outputs of a pruned cache are left out (None)."""
    try:
        want = sessions[0].run(outputs, feeds)
    except Exception as exc:
        where = "the calibration data" if calibrated else "sample inputs"
        raise (InputError if calibrated else ModelError)(
            f"ORIGINAL does not run on {where}: {first_line(exc)}") from None
    try:
        got = sessions[1].run(outputs, _own(feeds, pruned))
    except Exception as exc:
        raise InputError(f"PRUNED does not run on the inputs of ORIGINAL ({first_line(exc)}); "
                         "it must be a pruned version of ORIGINAL") from None
    presents = {p.present for p in cache_pairs(pruned)}
    for k, (name, a, b) in enumerate(zip(outputs, want, got, strict=True)):
        if np.shape(a) != np.shape(b) and name in presents:
            want[k] = got[k] = None
        elif np.shape(a) != np.shape(b):
            raise InputError(f"output {name!r} has shape {list(np.shape(a))} in ORIGINAL and "
                             f"{list(np.shape(b))} in PRUNED; PRUNED must be a pruned version "
                             "of ORIGINAL")
    return want, got


def _fidelity(sessions, outputs: list[str], stream, calibrated: bool, pruned: ModelProto
              ) -> list[OutputFidelity]:
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in outputs}
    for feeds in stream():
        want, got = _outputs_of(sessions, outputs, feeds, calibrated, pruned)
        for name, a, b in zip(outputs, want, got, strict=True):
            if a is not None and np.issubdtype(np.asarray(a).dtype, np.floating):
                pairs[name].append((np.asarray(a, np.float64), np.asarray(b, np.float64)))
    return [_agreement(name, chunks) for name, chunks in pairs.items() if chunks]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine; two all-zero samples agree (1), one all-zero sample does not (0)."""
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(1) / np.maximum(norm_a * norm_b, 1e-30)
    return np.where((norm_a == 0) & (norm_b == 0), 1.0, cosine)


def _agreement(name: str, chunks) -> OutputFidelity:
    a = np.concatenate([c[0].reshape(len(c[0]), -1) for c in chunks])
    b = np.concatenate([c[1].reshape(len(c[1]), -1) for c in chunks])
    cosine = float(np.mean(_cosines(a, b)))
    rel = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
    top1 = None
    if chunks[0][0].ndim == 2 and chunks[0][0].shape[1] > 1:
        top1 = float(np.mean(a.argmax(1) == b.argmax(1)))
    return OutputFidelity(name, cosine, rel, float(np.abs(a - b).max()), top1)


def _cost(proto: ModelProto, shapes) -> tuple[int, int]:
    graph = model_io.normalize(proto)
    table = concrete_shape_table(model_io.structure_proto(graph, proto), shapes,
                                 lambda: model_io.export(graph, proto))
    cost = model_cost(graph, concrete(table))
    return cost.macs, cost.params


def _latency(sessions, feeds: list[dict], runs: int) -> float:
    """Pruned latency / original latency, medians over runs taken in turns (each model
    on its own feeds)."""
    times: list[list[float]] = [[], []]
    for turn in range(runs + 2):
        for k, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(None, feeds[k])
            if turn > 1:
                times[k].append(time.perf_counter() - start)
    return statistics.median(times[1]) / statistics.median(times[0])
