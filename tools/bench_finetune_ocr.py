"""Pruning then fine-tuning the PP-OCR classifier and detector on real pictures.

    pip install --no-deps -r models/requirements.txt && pip install scikit-image scikit-learn
    pip install -e '.[train]'
    python tools/bench_finetune_ocr.py [--models cls,det] [--ratio 0.3] [--minutes 5]
        [--lr 1e-4] [--batch 16] [--per-image 12] [--augment flip,crop] [--clock cpu|wall]

Each model is pruned at `--ratio` (`--criterion wanda --reconstruct lsq`, calibrated
on the training crops), then distilled from the dense model on the same crops
(`finetune`, `--loss mse`, 20 % of them held out for early stopping) for at most
`--minutes` (by default the CPU time of this process over 2 cores; see
tools/bench_finetune.py). Training crops come from every scikit-image sample picture
shipped in its wheel except the evaluation ones, scikit-learn's two sample photos and
`skimage.data.lfw_subset()` faces; evaluation crops come only from the evaluation
pictures of tools/bench_calibration_ocr.py (`camera`, `chelsea`, `rocket`, the bottom
half of `page`, `hubble_deep_field`), never seen in pruning or training. It prints
the held-out relative L2 error of the outputs against the dense model (and, for the
classifier, the top-1 agreement) before and after fine-tuning.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import onnx
from bench_calibration import locate
from bench_calibration_ocr import (
    EVAL_IMAGES,
    MODELS,
    _image,
    crop_pictures,
    crops,
    outputs,
    relative_l2,
)
from bench_finetune import CLOCKS, _printer

import onnxprune

SKIMAGE_TRAIN = ("astronaut", "brick", "cat", "clock", "coffee", "coins", "colorwheel",
                 "grass", "gravel", "horse", "immunohistochemistry", "logo",
                 "microaneurysms", "moon", "page:top", "retina", "text")
LABELS = {"cls": "PP-OCR cls", "det": "PP-OCRv4 det"}


def training_crops(size: tuple[int, int], per_image: int, faces: int) -> np.ndarray:
    """Training crops: `per_image` of each scikit-image picture (minus the evaluation
    ones) and of the two scikit-learn photos, one of each of `faces` lfw_subset faces."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [_image(name) for name in SKIMAGE_TRAIN] + list(load_sample_images().images)
    people = [(face * 255).astype(np.uint8) for face in skimage.data.lfw_subset()[:faces]]
    return np.concatenate([crop_pictures(photos, size, per_image, seed=0),
                           crop_pictures(people, size, 1, seed=2)])


def measure(dense: np.ndarray, got: np.ndarray, classifier: bool) -> str:
    """Relative L2 error (and top-1 agreement for the classifier)."""
    line = f"rel. L2 {relative_l2(dense, got):.4f}"
    if classifier:
        line += f", top-1 agreement {np.mean(dense.argmax(1) == got.argmax(1)):.3f}"
    return line


def bench(key: str, args: argparse.Namespace) -> None:
    """Prune, fine-tune and measure one model."""
    path, size = MODELS[LABELS[key]]
    model = onnx.load(locate("rapidocr-onnxruntime", path))
    name = model.graph.input[0].name
    train = training_crops(size, args.per_image, args.faces)
    held_out = crops(EVAL_IMAGES, size, args.per_image, seed=1)
    dense = outputs(model, held_out)
    feeds = [{name: train[i:i + 8]} for i in range(0, len(train), 8)]
    pruned, report = onnxprune.prune(model, args.ratio, criterion="wanda", reconstruct="lsq",
                                     input_shapes={name: (1, 3, *size)}, calib=feeds)
    before = measure(dense, outputs(pruned, held_out), key == "cls")
    start = time.perf_counter()
    tuned, tuning = onnxprune.finetune(
        pruned, model, {name: train}, minutes=args.minutes, lr=args.lr,
        batch_size=args.batch, augment=tuple(a for a in args.augment.split(",") if a),
        eval_every=args.eval_every, patience=args.patience, clock=CLOCKS[args.clock],
        progress=_printer())
    after = measure(dense, outputs(tuned, held_out), key == "cls")
    print(f"{LABELS[key]}, --ratio {args.ratio} wanda+lsq, {report.macs_reduction:.2f}x fewer "
          f"MACs; {len(train)} training crops, {len(held_out)} held-out crops; "
          f"{tuning.steps} steps of batch {args.batch} in {tuning.train_seconds / 60:.1f} "
          f"min by the {args.clock} clock ({(time.perf_counter() - start) / 60:.1f} min "
          f"elapsed; stopped: {tuning.stop_reason}; best step {tuning.best_step}); "
          f"validation {tuning.validation_before:.4g} -> {tuning.validation_after:.4g}")
    print(f"  held-out: before fine-tuning {before}; after {after}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cls,det")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--per-image", type=int, default=12)
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--augment", default="flip,crop")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args(argv)
    for key in args.models.split(","):
        bench(key, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
