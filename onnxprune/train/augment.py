"""Augmentation of image-like training batches (`--augment flip,crop,noise`).

An input is image-like when it is a 4-D float array; its layout is NHWC when its last
axis has 1, 3 or 4 entries and its axis 1 does not, NCHW otherwise. Each training
sample is changed independently (the teacher and the student see the same result;
validation samples never are):

- `flip`: mirrored left-right (along the width axis) with probability 1/2;
- `crop`: shifted by up to p = max(1, size // 8) pixels along height and width (a
  random crop of the input padded by p with its edge values, at the input's size);
- `noise`: Gaussian noise with a standard deviation of 0.05 × the input's standard
  deviation over the training samples added to every element.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

AUGMENTATIONS = ("flip", "crop", "noise")
NOISE = 0.05


def parse(text: str | None) -> tuple[str, ...]:
    """'flip,crop' -> ('flip', 'crop'); refuses unknown names."""
    if not text:
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown or not names:
        raise InputError(f"--augment {text!r}: expected a comma-separated list of "
                         f"{', '.join(AUGMENTATIONS)}")
    return names


def spatial_axes(value: np.ndarray) -> tuple[int, int] | None:
    """(height, width) axes of an image-like input, or None."""
    if value.ndim != 4 or value.dtype.kind != "f":
        return None
    channels_last = value.shape[-1] in (1, 3, 4) and value.shape[1] not in (1, 3, 4)
    return (1, 2) if channels_last else (2, 3)


def image_inputs(inputs: dict[str, np.ndarray], kinds: tuple[str, ...]) -> dict[str, float]:
    """Image-like inputs and their standard deviations; refuses augmentation without
    one."""
    found = {name: float(np.std(value)) for name, value in inputs.items()
             if spatial_axes(value) is not None}
    if kinds and not found:
        held = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
        raise InputError(f"--augment needs an image-like input (a 4-D float array); the "
                         f"data holds {held}")
    return found


def augment(feeds: dict[str, np.ndarray], kinds: tuple[str, ...], scales: dict[str, float],
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The batch with every image-like input augmented."""
    if not kinds:
        return feeds
    result = dict(feeds)
    for name, scale in scales.items():
        value = np.array(feeds[name])
        axes = spatial_axes(value)
        if "flip" in kinds:
            value = flip(value, axes[1], rng)
        if "crop" in kinds:
            value = crop(value, axes, rng)
        if "noise" in kinds:
            value = value + rng.normal(0.0, NOISE * scale, value.shape).astype(value.dtype)
        result[name] = value
    return result


def flip(value: np.ndarray, axis: int, rng: np.random.Generator) -> np.ndarray:
    """Each sample mirrored along `axis` with probability 1/2."""
    chosen = rng.random(len(value)) < 0.5
    value[chosen] = np.flip(value[chosen], axis=axis)
    return value


def crop(value: np.ndarray, axes: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Each sample shifted by a random offset of up to size // 8 (at least 1) pixels."""
    pads = [max(1, value.shape[axis] // 8) for axis in axes]
    widths = [(0, 0)] * value.ndim
    for axis, pad in zip(axes, pads, strict=True):
        widths[axis] = (pad, pad)
    padded = np.pad(value, widths, mode="edge")
    result = np.empty_like(value)
    for index in range(len(value)):
        window = [slice(None)] * (value.ndim - 1)
        for axis, pad in zip(axes, pads, strict=True):
            start = int(rng.integers(0, 2 * pad + 1))
            window[axis - 1] = slice(start, start + value.shape[axis])
        result[index] = padded[index][tuple(window)]
    return result
