"""What a prune run is asked to do: one frozen options object (`PruneOptions`) that
checks itself when made, and what it decides (`decide`): its planning options and
reconstruction, or, when it replays a plan file, those the file recorded."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from onnx import ModelProto

from . import criteria, planfiles
from .distributed import Executor
from .errors import InputError
from .images import ImageOptions
from .memory import check_max_memory
from .planfiles import prune as prune_plans
from .planning import PlanOptions, planner_for, ranking
from .planning.curves import DEFAULT_SAMPLES
from .pruning import RECONSTRUCTIONS
from .schedule import check_prune_rounds

# Options a replayed plan fixes, in the order a refusal names them.
DECISIONS = ("ratio", "target_macs", "head_ratio", "target_latency", "target_energy",
             "hidden_ratio")


@dataclass(frozen=True)
class PruneOptions(PlanOptions):
    """Everything prune() takes besides the model, one field per keyword: the planning
    options (`PlanOptions`, recorded in plan files), then the rest.

    Planning: `ratio`, `head_ratio`, `hidden_ratio` or a `target_macs`/`target_latency`/
    `target_energy` budget; `criterion` (default: `l1`, or `wanda` with `calib`;
    `sensitivity` and `zero` choose their planners), `global_ranking`, `max_ratio`,
    `round_to`, `min_channels`, `ignore`, `seed`, `provider` and `threads` (latency).
    Reconstruction: `reconstruct` (`none`, `bias`, `lsq`; default `lsq` with `calib`,
    else `none`) and `ridge`. Data: `calib` (an .npz path, a directory of .npz files or
    images, an iterable of feed dicts or an onnxruntime CalibrationDataReader),
    `calib_samples`, `batch_size`, `images`, `sensitivity_samples`, `input_shapes`.
    `plan`: a plan file (or a report's `plan_document`) to replay instead of planning:
    it brings the planning options. `max_memory`: bytes one level of layer-wise
    calibration may hold (None: no cap; `memory`). `progress`, `show_progress`: what
    long steps report. `executor`: where the independent solves of a level (lsq refit)
    and the sensitivity measurements run (`distributed.executor()`; None: in-process;
    the same model either way). `rounds`: cut in this many rounds on the cubic schedule
    (`schedule`, `rounds`); `between_rounds(model, round)`: called after every round but
    the last on the model cut so far (original shapes, the cut units zeroed at their
    consumers), it returns the model the next round starts from (e.g. fine-tuned)."""

    criterion: str | None = None
    reconstruct: str | None = None
    ridge: float | str = 0.1
    sensitivity_samples: int = DEFAULT_SAMPLES
    input_shapes: dict[str, tuple[int, ...]] | None = None
    calib: object = None
    calib_samples: int | None = None
    batch_size: int = 8
    images: ImageOptions | None = None
    plan: str | os.PathLike | dict | None = None
    max_memory: int | None = None
    progress: Callable[[int], None] | None = None
    show_progress: bool = False
    executor: Executor | None = None
    rounds: int = 1
    between_rounds: Callable[[ModelProto, int], ModelProto] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore", tuple(self.ignore))
        criterion = self.criterion_or_default()
        check_prune_rounds(self.rounds, {
            "--plan": self.plan is not None, "--hidden-ratio": self.hidden_ratio is not None,
            "--target-latency": self.target_latency is not None,
            "--criterion sensitivity": criterion == "sensitivity",
            "--criterion zero": criterion == "zero"})
        if self.plan is not None:
            _refuse_decisions(self)
        else:
            planning = self.planning()
            check_ridge(self.ridge)
            planner_for(planning)
        if self.sensitivity_samples < 1:
            raise InputError("--sensitivity-samples must be at least 1, got "
                             f"{self.sensitivity_samples}")
        if self.plan is None:
            criteria.check_available(ranking(criterion))
        if self.plan is None and ranking(criterion).needs_data and self.calib is None:
            raise InputError(f"criterion {criterion!r} needs calibration data (--calib DATA)")
        if self.reconstruct is not None:
            check_reconstruct(self.reconstruct, self.calib is not None)
        check_max_memory(self.max_memory)

    def criterion_or_default(self) -> str:
        """The criterion asked for: wanda with calibration data, else l1, by default."""
        return self.criterion or ("wanda" if self.calib is not None else "l1")

    def reconstruct_or_default(self) -> str:
        """The reconstruction asked for: lsq with calibration data, else none, by
        default."""
        return self.reconstruct or ("lsq" if self.calib is not None else "none")

    def planning(self) -> PlanOptions:
        """The planning options asked for (checked as they are made)."""
        asked = {f.name: getattr(self, f.name) for f in fields(PlanOptions)}
        return PlanOptions(**dict(asked, criterion=self.criterion_or_default()))


@dataclass(frozen=True)
class Decisions:
    """What a run decides with: planning options, reconstruction and ridge, and the plan
    file replayed (None: planned afresh)."""

    planning: PlanOptions
    reconstruct: str
    ridge: float | str
    document: dict | None = None

    def recorded(self, round_to: int | None = None) -> dict:
        """The options a plan file records, with the rounding chosen for them, if any."""
        return dict(asdict(self.planning.rounded_to(round_to)), reconstruct=self.reconstruct,
                    ridge=self.ridge)


def decide(options: PruneOptions) -> Decisions:
    """The options' decisions, or those of the plan file they replay (refused when it
    cannot be read or its options do not hold)."""
    if options.plan is None:
        return Decisions(options.planning(), options.reconstruct_or_default(), options.ridge)
    document = planfiles.read(options.plan, "prune")
    reconstruct, ridge = _replayed_reconstruction(document, options)
    planning = prune_plans.plan_options(document)
    check_ridge(ridge)
    ranking(planning.criterion)
    return Decisions(planning, reconstruct, ridge, document)


def _replayed_reconstruction(document: dict, options: PruneOptions
                             ) -> tuple[str, float | str]:
    """The reconstruction and ridge to run: as given when `reconstruct` is; else those
    the replayed plan recorded (a refit is part of what it decided; it needs the
    calibration data again); else lsq with calibration data and none without."""
    calibrated = options.calib is not None
    recorded = document.get("options") or {}
    if options.reconstruct is not None or recorded.get("reconstruct") not in RECONSTRUCTIONS:
        return options.reconstruct_or_default(), options.ridge
    reconstruct, given = recorded["reconstruct"], recorded.get("ridge")
    if reconstruct != "none" and not calibrated:
        raise InputError(f"the plan was made with --reconstruct {reconstruct}, which needs "
                         "calibration data: give --calib DATA (the data it was made with "
                         "gives the same weights) or --reconstruct none")
    return reconstruct, given if isinstance(given, (int, float)) or given == "auto" \
        else options.ridge


def _refuse_decisions(options: PruneOptions) -> None:
    given = [name for name in DECISIONS if getattr(options, name) is not None]
    if given:
        raise InputError(f"a replayed plan fixes every decision; do not give {given[0]}")


def check_ridge(ridge: float | str) -> None:
    """Refuse a ridge that is not "auto" or a finite number >= 0."""
    if ridge == "auto":
        return
    if isinstance(ridge, str) or not ridge >= 0 or ridge == math.inf:
        raise InputError(f"--ridge must be a finite number >= 0 or auto, got {ridge}")


def check_reconstruct(method: str, calibrated: bool) -> None:
    """Refuse an unknown reconstruction, or one that lacks its calibration data."""
    if method not in RECONSTRUCTIONS:
        raise InputError(f"unknown reconstruction {method!r}; choose one of "
                         f"{', '.join(RECONSTRUCTIONS)}")
    if method != "none" and not calibrated:
        raise InputError(f"--reconstruct {method} needs calibration data (--calib DATA)")
