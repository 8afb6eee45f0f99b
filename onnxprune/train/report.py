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
    the loop, by the clock it was given. With `group_lasso` λ > 0 the validation
    values are the penalized objective (loss + λ·Σ_u ‖w_u‖); `lasso_units`: the units
    the lasso acts on, `zero_units`: how many of them the returned weights hold at
    exactly zero, `lasso_groups`: the groups they belong to."""

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
    group_lasso: float = 0.0
    lasso_units: int | None = None
    zero_units: int | None = None
    lasso_groups: int | None = None
    lr_schedule: str = "constant"

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
                    checks: list[str], seconds: float,
                    lasso_units: tuple[int, int, int] | None = None) -> FinetuneReport:
    """The report of a finished run; `lasso_units`: (units, zero units, groups) of the
    group lasso."""
    units, zeros, groups = lasso_units or (None, None, None)
    return FinetuneReport(
        loss=options.loss, temperature=options.temperature, lr=options.lr,
        lr_schedule=options.lr_schedule,
        batch_size=options.batch_size, augment=options.augment, hidden=objective.hidden,
        train_samples=len(samples.train),
        validation_samples=[int(i) for i in samples.validation],
        trainable=int(sum(v.size for v in weights.trainable.values())),
        masked_zeros=int(sum(np.count_nonzero(~m) for m in weights.masks.values())),
        steps=history.steps, stop_reason=history.stop_reason, best_step=history.best_step,
        validation_before=history.before, validation_after=history.best,
        loss_curve=history.losses, validation_curve=history.validation, checks=checks,
        seconds=seconds, train_seconds=history.seconds, group_lasso=options.group_lasso,
        lasso_units=units, zero_units=zeros, lasso_groups=groups)
