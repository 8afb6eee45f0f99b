"""The fine-tuning loop on fake steps, validations and clocks (nothing depends on
timing), the data split, augmentation and the losses against numpy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("jax")
from onnxprune.errors import InputError  # noqa: E402
from onnxprune.train import augment, losses  # noqa: E402
from onnxprune.train.data import split, training_batches  # noqa: E402
from onnxprune.train.loop import (  # noqa: E402
    PATIENCE,
    STEPS,
    TIME,
    Budget,
    lr_factor,
    run_loop,
)


class Fake:
    """A model whose weights are the step count, validated on a given curve."""

    def __init__(self, curve, seconds_per_read: float = 0.0):
        self.curve, self.weights, self.now, self.tick = iter(curve), 0, 0.0, seconds_per_read
        self.fractions: list[float] = []

    def step(self, fraction: float) -> float:
        self.fractions.append(fraction)
        self.weights += 1
        return 1.0 / self.weights

    def evaluate(self) -> float:
        return next(self.curve)

    def clock(self) -> float:
        self.now += self.tick
        return self.now

    def run(self, budget: Budget):
        return run_loop(self.step, self.evaluate, lambda: self.weights, budget, self.clock)


def test_early_stopping_stops_after_patience_and_returns_the_best():
    fake = Fake([1.0, 0.8, 0.6, 0.7, 0.65, 0.9, 0.5])
    best, history = fake.run(Budget(steps=100, every=10, patience=3))
    assert history.stop_reason == PATIENCE and history.steps == 50
    assert best == 20 and history.best_step == 20 and history.best == 0.6
    assert history.validation == [(0, 1.0), (10, 0.8), (20, 0.6), (30, 0.7), (40, 0.65),
                                  (50, 0.9)]
    assert len(history.losses) == 50


def test_never_improving_returns_the_input_weights():
    fake = Fake([0.5, 0.7, 0.6, 0.5])
    best, history = fake.run(Budget(steps=30, every=10, patience=5))
    assert best == 0 and history.best_step == 0 and history.best == 0.5
    assert history.stop_reason == STEPS and history.steps == 30


def test_minutes_are_read_from_the_clock_given():
    fake = Fake(itertools.count(10, -1), seconds_per_read=7.0)
    _, history = fake.run(Budget(minutes=1.0, every=4, patience=10))
    # The clock advances 7 s per read: the start, then one read before each step.
    assert history.stop_reason == TIME and history.steps == 8
    assert history.validation[-1][0] == 8  # the last weights are validated too


def test_each_step_is_told_the_spent_fraction_of_the_budget():
    fake = Fake(itertools.count(10, -1))
    fake.run(Budget(steps=4, every=2, patience=10))
    assert fake.fractions == [0.0, 0.25, 0.5, 0.75]
    timed = Fake(itertools.count(10, -1), seconds_per_read=15.0)
    timed.run(Budget(steps=100, minutes=1.0, every=50, patience=10))
    # 15 s per clock read; the step reads once before each step, after the start.
    assert timed.fractions == [0.25, 0.5, 0.75]
    assert Budget(steps=10, minutes=1.0).fraction(2, 30.0) == 0.5
    assert Budget(steps=10).fraction(20, 0.0) == 1.0


def test_cosine_schedule_decays_from_one_to_zero():
    assert [lr_factor("constant", f) for f in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    cosine = [lr_factor("cosine", f) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert cosine == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0], abs=1e-7)


def test_a_non_finite_validation_never_wins():
    fake = Fake([1.0, float("nan"), 0.9])
    best, history = fake.run(Budget(steps=20, every=10, patience=5))
    assert best == 20 and history.best == 0.9


def test_split_is_seeded_disjoint_and_refuses_bad_fractions():
    train, val = split(10, 0.3, seed=4)
    assert len(val) == 3 and not set(train) & set(val) and len(train) + len(val) == 10
    assert np.array_equal(val, split(10, 0.3, seed=4)[1])
    assert not np.array_equal(val, split(10, 0.3, seed=5)[1])
    for count, fraction in ((10, 0.0), (10, 1.0), (1, 0.5)):
        with pytest.raises(InputError):
            split(count, fraction, 0)
    batches = training_batches(train, 3, np.random.default_rng(0))
    epoch = [next(batches) for _ in range(2)]
    assert all(len(b) == 3 for b in epoch) and len(set(np.concatenate(epoch))) == 6


def test_augmentations_keep_shapes_and_move_pixels_within_bounds():
    x = np.arange(2 * 3 * 16 * 16, dtype=np.float32).reshape(2, 3, 16, 16)
    feeds = {"x": x, "ids": np.zeros((2, 4), np.int64)}
    rng = np.random.default_rng(0)
    scales = augment.image_inputs(feeds, ("flip", "crop"))
    assert set(scales) == {"x"}
    flipped = augment.flip(x.copy(), 3, np.random.default_rng(1))
    assert all(np.array_equal(f, s) or np.array_equal(f, s[..., ::-1])
               for f, s in zip(flipped, x, strict=True))
    cropped = augment.crop(x.copy(), (2, 3), rng)
    assert cropped.shape == x.shape
    # A shifted crop of an increasing ramp moves every value by a bounded offset.
    assert np.abs(cropped - x).max() <= 2 * 16 + 2
    out = augment.augment(feeds, ("noise",), scales, rng)
    assert out["ids"] is feeds["ids"] and not np.array_equal(out["x"], x)
    with pytest.raises(InputError, match="image-like"):
        augment.image_inputs({"ids": feeds["ids"]}, ("flip",))
    with pytest.raises(InputError, match="--augment"):
        augment.parse("flip,rotate")
    assert augment.spatial_axes(np.zeros((1, 8, 8, 3), np.float32)) == (1, 2)


def test_losses_match_their_numpy_definitions():
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    num, den = losses.mse(s, t, 1.0)
    assert float(num / den) == pytest.approx(np.sum((s - t) ** 2) / np.sum(t ** 2), rel=1e-5)
    temperature = 2.0
    p = np.exp(t / temperature) / np.exp(t / temperature).sum(-1, keepdims=True)
    q = np.exp(s / temperature) / np.exp(s / temperature).sum(-1, keepdims=True)
    want = temperature ** 2 * np.mean(np.sum(p * np.log(p / q), -1))
    assert float(np.divide(*losses.kl(s, t, temperature))) == pytest.approx(want, rel=1e-5)
    cos = np.sum(s * t, -1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(t, axis=-1)
    assert float(np.divide(*losses.cosine(s, t, 1.0))) == pytest.approx(np.mean(1 - cos),
                                                                        rel=1e-5)
