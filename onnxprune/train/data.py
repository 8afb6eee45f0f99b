"""Distillation data: the arrays of an .npz file (or a folder of them, or of images)
checked against the student's and the teacher's inputs, optional labels, a seeded
split into training and validation samples, and the batches of each part.

Labels are an array named `labels` (when no model input has that name) with one entry
per sample: integer class indices for the first output (`[N, classes]` logits), or
float targets with the first output's shape per sample."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from ..calibrate import Feeds, check_arrays, read_arrays
from ..errors import InputError
from ..images import ImageOptions
from ..shapes import input_specs

LABELS = "labels"
Source = str | os.PathLike | Feeds  # an .npz file, a folder of them or of images; arrays


@dataclass(frozen=True)
class Data:
    """Every sample's inputs (and labels), and which samples train and validate."""

    inputs: Feeds
    labels: np.ndarray | None
    train: np.ndarray
    validation: np.ndarray

    def feeds(self, indices: np.ndarray) -> Feeds:
        return {name: values[indices] for name, values in self.inputs.items()}

    def targets(self, indices: np.ndarray) -> np.ndarray | None:
        return None if self.labels is None else self.labels[indices]


def load(source: Source, student: ModelProto, teacher: ModelProto,
         fraction: float, seed: int, images: ImageOptions | None = None) -> Data:
    """Read and check the data against both models' inputs, then split it."""
    if isinstance(source, dict):
        arrays = {name: np.asarray(value) for name, value in source.items()}
    else:
        arrays = read_arrays(source, student, images)
    names = {spec.name for spec in input_specs(student)}
    labels = arrays.pop(LABELS) if LABELS in arrays and LABELS not in names else None
    check_inputs_agree(student, teacher)
    check_arrays(arrays, student)
    check_arrays(arrays, teacher)
    count = len(next(iter(arrays.values())))
    if labels is not None:
        check_labels(labels, count)
    train, validation = split(count, fraction, seed)
    return Data(arrays, labels, train, validation)


def check_inputs_agree(student: ModelProto, teacher: ModelProto) -> None:
    """The student and the teacher must read the same inputs."""
    mine = sorted(spec.name for spec in input_specs(student))
    theirs = sorted(spec.name for spec in input_specs(teacher))
    if mine != theirs:
        raise InputError(f"the student's inputs ({', '.join(mine)}) differ from the "
                         f"teacher's ({', '.join(theirs)})")


def check_labels(labels: np.ndarray, count: int) -> None:
    """One finite label per sample."""
    if labels.ndim == 0 or len(labels) != count:
        raise InputError(f"data: {LABELS!r} holds {labels.shape[0] if labels.ndim else 0} "
                         f"labels for {count} samples")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise InputError(f"data: {LABELS!r} holds NaN or infinity")
    if labels.dtype.kind not in "fiu":
        raise InputError(f"data: {LABELS!r} must be integer class indices or float targets,"
                         f" not {labels.dtype}")


def split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) sample indices: a seeded random `fraction` validates
    (at least one sample each)."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--val-fraction must be in (0, 1), got {fraction}")
    if count < 2:
        raise InputError(f"fine-tuning needs at least 2 samples (training and validation), "
                         f"the data holds {count}")
    held = min(max(1, round(count * fraction)), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def batch_size(models: list[ModelProto], requested: int, available: int) -> tuple[int, bool]:
    """(size, fixed): the requested size, at most the training samples, or the fixed
    batch an input declares."""
    for model in models:
        for spec in input_specs(model):
            dims = spec.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                fixed = dims[0].dim_value
                if fixed > available:
                    raise InputError(f"input {spec.name!r} has a fixed batch of {fixed}; the "
                                     f"training part holds {available} samples")
                return fixed, True
    return max(1, min(requested, available)), False


def training_batches(indices: np.ndarray, size: int, rng: np.random.Generator
                     ) -> Iterator[np.ndarray]:
    """Endless epochs of shuffled, full batches of training sample indices."""
    while True:
        order = rng.permutation(indices)
        for start in range(0, len(order) - size + 1, size):
            yield order[start:start + size]


def validation_batches(indices: np.ndarray, size: int, fixed: bool) -> list[np.ndarray]:
    """Validation indices in batches: a shorter last one, or none with a fixed batch
    size (the model's declared batch; then at least one full batch is needed)."""
    batches = [indices[start:start + size] for start in range(0, len(indices), size)]
    if fixed:
        batches = [batch for batch in batches if len(batch) == size]
        if not batches:
            raise InputError(f"the validation part holds {len(indices)} samples, fewer than "
                             f"the model's fixed batch of {size}; raise --val-fraction")
    return batches
