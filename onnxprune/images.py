"""A folder of images as calibration data for a model with one image input.

Images are read with Pillow (the optional `images` extra), converted to RGB (or
BGR), resized to the input's height and width, scaled to [0, 1], normalized with
the given mean and std, and laid out as NCHW or NHWC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import InputError

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


@dataclass
class ImageOptions:
    """Preprocessing: size (height, width; default from the model), mean and std per
    channel after scaling to [0, 1], layout, and channel order."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    bgr: bool = False

    def validate(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"image layout must be NCHW or NHWC, got {self.layout!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or \
                not np.isfinite(self.mean + self.std).all():
            raise InputError("image mean and std need three finite values each, std > 0")


def image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in SUFFIXES)


def load(directory: Path, spec: onnx.ValueInfoProto, options: ImageOptions) -> np.ndarray:
    """All images of a folder as one array [samples, …] for the model input `spec`."""
    options.validate()
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading images needs Pillow: pip install 'onnxprune[images]'") \
            from None
    height, width = _size(spec, options)
    arrays = []
    for path in image_files(directory):
        try:
            with Image.open(path) as image:
                picture = image.convert("RGB").resize((width, height), Image.BILINEAR)
        except Exception as exc:
            raise InputError(f"{path}: not a readable image ({exc})") from None
        arrays.append(np.asarray(picture, np.float32) / 255.0)
    batch = (np.stack(arrays) - np.float32(options.mean)) / np.float32(options.std)
    if options.bgr:
        batch = batch[..., ::-1]
    if options.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, np.float32)


def _size(spec: onnx.ValueInfoProto, options: ImageOptions) -> tuple[int, int]:
    if options.size is not None:
        return options.size
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in
            spec.type.tensor_type.shape.dim]
    spatial = dims[2:4] if options.layout == "NCHW" else dims[1:3]
    if len(dims) != 4 or not all(spatial):
        raise InputError(f"input {spec.name!r} has no fixed height and width; give the "
                         "image size (--image-size HxW)")
    return spatial[0], spatial[1]
