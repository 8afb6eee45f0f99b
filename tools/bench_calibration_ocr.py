"""Data-aware pruning of the PP-OCR classifier and detector on real images.

    pip install --no-deps -r models/requirements.txt && pip install scikit-image
    python tools/bench_calibration_ocr.py [--targets 0.95,0.9,0.8] [--per-image 12]

Crops of scikit-image's sample pictures, preprocessed as RapidOCR feeds PP-OCR
((x/255 − 0.5)/0.5, NCHW); calibration and evaluation use different pictures (the
detector finds text only in `page`, so its top half calibrates and its bottom half,
other lines of text, is evaluated). For each MACs target, `l1` without
reconstruction is planned first (one ratio for every group); every data-aware setting
then gets exactly the MACs `l1` reached, so the rows compare equal budgets. It prints
the relative L2 error of the outputs against the dense model and the best setting's
improvement over `l1`.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from bench_calibration import locate

from onnxprune import prune
from onnxprune.verify import run

# Each side mixes photographs with a page of text, so both see what OCR models see.
CALIB_IMAGES = ("astronaut", "coffee", "page:top", "coins", "immunohistochemistry")
EVAL_IMAGES = ("camera", "chelsea", "rocket", "page:bottom", "hubble_deep_field")
MODELS = {
    "PP-OCR cls": ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (48, 192)),
    "PP-OCRv4 det": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", (160, 160)),
}
SETTINGS = [("l1", "none"), ("wanda", "bias"), ("wanda", "lsq"), ("sensitivity", "none"),
            ("sensitivity", "bias"), ("sensitivity", "lsq")]


def crops(names: tuple[str, ...], size: tuple[int, int], per_image: int, seed: int,
          short_side: int = 0) -> np.ndarray:
    """Random crops of the named pictures (see `crop_pictures`)."""
    return crop_pictures([_image(name) for name in names], size, per_image, seed,
                         short_side)


def crop_pictures(pictures: list[np.ndarray], size: tuple[int, int], per_image: int,
                  seed: int, short_side: int = 0) -> np.ndarray:
    """`per_image` random crops of each picture, normalized as RapidOCR feeds PP-OCR,
    NCHW; pictures are first upscaled (nearest neighbour) so their shorter side is at
    least `short_side` and they hold a crop."""
    rng = np.random.default_rng(seed)
    out = []
    for image in pictures:
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        scale = max(1.0, size[0] / image.shape[0], size[1] / image.shape[1],
                    short_side / min(image.shape[:2]))
        rows = (np.arange(int(np.ceil(image.shape[0] * scale))) / scale).astype(int)
        cols = (np.arange(int(np.ceil(image.shape[1] * scale))) / scale).astype(int)
        image = image[np.minimum(rows, image.shape[0] - 1)][:, np.minimum(
            cols, image.shape[1] - 1)]
        for _ in range(per_image):
            top = rng.integers(0, image.shape[0] - size[0] + 1)
            left = rng.integers(0, image.shape[1] - size[1] + 1)
            out.append(image[top:top + size[0], left:left + size[1]])
    batch = np.stack(out).astype(np.float32).transpose(0, 3, 1, 2)
    return (batch / 255.0 - 0.5) / 0.5


def _image(name: str) -> np.ndarray:
    """A scikit-image sample picture; `page:top` / `page:bottom` are its two halves
    (different lines of text)."""
    import skimage.data

    name, _, half = name.partition(":")
    image = getattr(skimage.data, name)()
    middle = image.shape[0] // 2
    return {"": image, "top": image[:middle], "bottom": image[middle:]}[half]


def outputs(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    name = model.graph.input[0].name
    return np.concatenate([next(iter(run(model, {name: images[i:i + 8]}).values()))
                           for i in range(0, len(images), 8)])


def relative_l2(reference: np.ndarray, value: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="0.95,0.9,0.8",
                        help="MACs targets (fractions of the dense MACs kept)")
    parser.add_argument("--per-image", type=int, default=12)
    parser.add_argument("--round-to", type=int, default=16)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--settings", default=",".join(f"{c}:{r}" for c, r in SETTINGS),
                        help="criterion:reconstruction pairs; the first is the baseline")
    args = parser.parse_args(argv)
    settings = [tuple(s.split(":")) for s in args.settings.split(",")]
    print(f"== relative L2 output error against dense at equal MACs; calibration: "
          f"{', '.join(CALIB_IMAGES)}; evaluation: {', '.join(EVAL_IMAGES)}")
    print(f"{'model':14s} {'MACs red.':>9s} " + " ".join(
        f"{c + ('+' + r if r != 'none' else ''):>17s}" for c, r in settings) + "   best gain")
    for label in args.models.split(","):
        path, size = MODELS[label]
        model = onnx.load(locate("rapidocr-onnxruntime", path))
        name = model.graph.input[0].name
        calib = crops(CALIB_IMAGES, size, args.per_image, seed=0)
        held_out = crops(EVAL_IMAGES, size, args.per_image, seed=1)
        dense = outputs(model, held_out)
        feeds = [{name: calib[i:i + 8]} for i in range(0, len(calib), 8)]
        for target in (float(t) for t in args.targets.split(",")):
            errors = []
            for criterion, reconstruct in settings:
                pruned, report = prune(model, target_macs=target, criterion=criterion,
                                       reconstruct=reconstruct, round_to=args.round_to,
                                       input_shapes={name: (1, 3, *size)},
                                       calib=None if criterion in ("l1", "l2") else feeds)
                if not errors:
                    target, macs = report.macs_after / report.macs_before, \
                        report.macs_reduction
                errors.append(relative_l2(dense, outputs(pruned, held_out)))
            print(f"{label:14s} {macs:9.2f} " + " ".join(f"{e:17.4f}" for e in errors) +
                  f"   {errors[0] / min(errors[1:]):8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
