"""The report of a fine-tuning run: options, data split, curves, stop reason and the
validation error before and after (JSON, and an HTML page with the loss curves)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .loop import History

if TYPE_CHECKING:
    from .data import Data
    from .finetune import FinetuneOptions
    from .trainer import Objective
    from .weights import Weights


@dataclass(frozen=True)
class FinetuneReport:
    """One fine-tuning run. `validation_before`/`validation_after`: the loss (without
    hidden or label terms) over the validation samples for the input weights and for
    the weights returned; `improved` is False when no step beat the input, and the
    input weights were returned unchanged. `seconds`: the whole run; `train_seconds`:
    the loop, by the clock it was given."""

    loss: str
    temperature: float
    lr: float
    batch_size: int
    augment: tuple[str, ...]
    hidden: tuple[str, ...]
    train_samples: int
    validation_samples: list[int]
    trainable: int
    masked_zeros: int
    steps: int
    stop_reason: str
    best_step: int
    validation_before: float
    validation_after: float
    loss_curve: list[tuple[int, float]]
    validation_curve: list[tuple[int, float]]
    checks: list[str]
    seconds: float
    train_seconds: float

    @property
    def improved(self) -> bool:
        return self.best_step > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["improved"] = self.improved
        data["validation_reduction"] = (self.validation_before / self.validation_after
                                        if self.validation_after > 0 else None)
        return data


def finetune_report(options: FinetuneOptions, objective: Objective, samples: Data,
                    weights: Weights, history: History,
                    checks: list[str], seconds: float) -> FinetuneReport:
    """The report of a finished run."""
    return FinetuneReport(
        loss=options.loss, temperature=options.temperature, lr=options.lr,
        batch_size=options.batch_size, augment=options.augment, hidden=objective.hidden,
        train_samples=len(samples.train),
        validation_samples=[int(i) for i in samples.validation],
        trainable=int(sum(v.size for v in weights.trainable.values())),
        masked_zeros=int(sum(np.count_nonzero(~m) for m in weights.masks.values())),
        steps=history.steps, stop_reason=history.stop_reason, best_step=history.best_step,
        validation_before=history.before, validation_after=history.best,
        loss_curve=history.losses, validation_curve=history.validation, checks=checks,
        seconds=seconds, train_seconds=history.seconds)
