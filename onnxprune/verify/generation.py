"""Verification with the key/value cache: a short greedy generation (a prompt pass, then
single-token steps that feed each step's present values back as the past) from the
pruned model and from its masked reference; tokens must be identical and logits equal
up to rounding. It applies to models with the input and output names that optimum and
onnxruntime-genai use for cached decoding: `input_ids` and `logits` (`attention_mask`
and `position_ids` when present) beside their cache pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import ModelProto

from ..cache import CachePair, cache_pairs
from ..errors import VerificationError
from ..targets.onnxruntime import session

TOKENS, LOGITS, MASK, POSITIONS = "input_ids", "logits", "attention_mask", "position_ids"
PROMPT_TOKENS = 8
STEPS = 6
TOLERANCE = 1e-3


@dataclass
class Generation:
    """Greedy tokens and the last position's logits of every pass."""

    tokens: list[int]
    logits: list[np.ndarray]


def can_generate(model: ModelProto) -> bool:
    """Whether the model has cache pairs and the names of cached decoding."""
    inputs = {v.name for v in model.graph.input}
    outputs = {v.name for v in model.graph.output}
    return bool(cache_pairs(model)) and TOKENS in inputs and LOGITS in outputs


def generate(model: ModelProto, prompt: np.ndarray, steps: int = STEPS) -> Generation:
    """Greedy decoding of `steps` tokens after `prompt` (1-D token ids), batch 1."""
    pairs = cache_pairs(model)
    sess = session(model)
    wanted = {i.name for i in sess.get_inputs()}
    types = {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
             for v in model.graph.input}
    feeds = {p.past: _empty_past(model, p, types[p.past]) for p in pairs}
    ids, total, result = prompt.reshape(1, -1), 0, Generation([], [])
    for _ in range(steps + 1):
        start, total = total, total + ids.shape[1]
        feeds |= _step_feeds(ids, start, total, types, wanted)
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds),
                       strict=True))
        last = out[LOGITS][0, -1]
        result.logits.append(last)
        result.tokens.append(int(np.argmax(last)))
        feeds = {p.past: out[p.present] for p in pairs}
        ids = np.array([[result.tokens[-1]]])
    return result


def _step_feeds(ids: np.ndarray, start: int, total: int, types: dict, wanted: set) -> dict:
    feeds = {TOKENS: ids.astype(types[TOKENS])}
    if MASK in wanted:
        feeds[MASK] = np.ones((1, total), types[MASK])
    if POSITIONS in wanted:
        feeds[POSITIONS] = np.arange(start, total, dtype=types[POSITIONS]).reshape(1, -1)
    return feeds


def _empty_past(model: ModelProto, pair: CachePair, dtype) -> np.ndarray:
    """A cache of no positions: batch 1, declared sizes, 1 for other symbolic axes."""
    value = next(v for v in model.graph.input if v.name == pair.past)
    dims = value.type.tensor_type.shape.dim
    shape = [0 if axis == pair.axis else d.dim_value if d.HasField("dim_value") else 1
             for axis, d in enumerate(dims)]
    return np.zeros(shape, dtype)


def prompt_for(model: ModelProto, length: int = PROMPT_TOKENS, seed: int = 0) -> np.ndarray:
    """Seeded token ids below the vocabulary size (the logits' last axis)."""
    value = next(v for v in model.graph.output if v.name == LOGITS)
    vocab = value.type.tensor_type.shape.dim[-1].dim_value or 2
    return np.random.default_rng(seed).integers(0, vocab, length)


def check_generation(pruned: ModelProto, reference: ModelProto, steps: int = STEPS) -> None:
    """The pruned model generates the reference's greedy tokens with close logits."""
    from .reference import outputs_close, relative_error

    prompt = prompt_for(reference)
    want, got = generate(reference, prompt, steps), generate(pruned, prompt, steps)
    for step, (expected, value) in enumerate(zip(want.logits, got.logits, strict=True)):
        if not outputs_close(expected, value, TOLERANCE):
            raise VerificationError(
                f"cached generation: logits of step {step} differ from the reference: "
                f"relative error {relative_error(expected, value):.2e}")
    if want.tokens != got.tokens:
        raise VerificationError(f"cached generation: tokens {got.tokens} differ from the "
                                f"reference's {want.tokens}")
