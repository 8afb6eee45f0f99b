"""What the commands share: one-line errors and warnings with documented exit
statuses (usage errors and Ctrl-C included), option parsing and types, progress on
a terminal, JSON output."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from ..errors import InputError, OnnxPruneError, first_line

if TYPE_CHECKING:
    from ..distributed import Executor
    from ..images import ImageOptions

BAD_INPUT = 2
INTERNAL_ERROR = 70
INTERRUPTED = 130
# Failures of the file system that say an output cannot be written, not a bug.
NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
P = ParamSpec("P")
R = TypeVar("R")
Command = TypeVar("Command", bound=Callable[..., Any])  # a function click decorates


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with a documented status."""
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    click.echo(f"onnxprune: error: {message}", err=True)
    sys.exit(code)


def interrupted() -> NoReturn:
    """Ctrl-C: one line, exit status 130 (temporary outputs are already removed)."""
    click.echo("onnxprune: interrupted", err=True)
    sys.exit(INTERRUPTED)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every failure into one clear line and a documented exit status."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OnnxPruneError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            interrupted()
        except MemoryError:
            fail("out of memory", INTERNAL_ERROR)
        except OSError as exc:
            if exc.errno not in UNWRITABLE:
                _internal(exc)
            fail(f"{exc.filename or 'output'}: cannot write ({exc.strerror})", BAD_INPUT)
        except Exception as exc:  # never show a traceback to a user
            _internal(exc)

    return wrapper


def _internal(exc: Exception) -> NoReturn:
    if os.environ.get("ONNXPRUNE_DEBUG"):
        raise exc
    fail(f"internal error: {type(exc).__name__}: {first_line(exc)} (set ONNXPRUNE_DEBUG=1 for a "
         "traceback)", INTERNAL_ERROR)


class Main(click.Group):
    """The command group: usage errors are one line too, and Ctrl-C is exit 130."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except NO_ARGS:
            click.echo(self.get_help(click.Context(self, info_name=prog_name or "onnxprune")))
            code = 0
        except click.ClickException as exc:
            fail(" ".join(exc.format_message().split()), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            interrupted()
        sys.exit(code if isinstance(code, int) else 0)


def warn(messages: list[str], quiet: bool) -> None:
    """`onnxprune: warning: ...` lines on stderr (none with --quiet or --json)."""
    if quiet:
        return
    for message in messages:
        click.echo(f"onnxprune: warning: {message}", err=True)


class FiniteFloat(click.ParamType):
    """A finite number of at least `low`."""

    name = "float"

    def __init__(self, low: float = 0.0) -> None:
        self.low = low

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < self.low:
            self.fail(f"{value!r} must be a finite number >= {self.low:g}", param, ctx)
        return number


class RidgeValue(FiniteFloat):
    """A finite number >= 0, or auto."""

    name = "ridge"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return super().convert(value, param, ctx)


def seed_option(func: Command) -> Command:
    """The seed of a command's random choices."""
    return click.option(
        "--seed", type=click.IntRange(min=0), default=0, show_default=True,
        help="Seed (>= 0) of every random choice: the random criterion, sampled "
             "positions, and the sample inputs verification runs on.")(func)


def distributed_flags(func: Command) -> Command:
    """--workers and --ray-address: where independent tasks run (see distributed.py)."""
    func = click.option("--ray-address", help="Run the tasks on the Ray cluster at this "
                        "address (host:port of `ray start --head`; needs the distributed "
                        "extra).")(func)
    return click.option("--workers", type=int, default=1, show_default=True,
                        help="1: everything in this process; N > 1: a local Ray runtime "
                             "of N CPUs (needs the distributed extra).")(func)


def fanout(workers: int, address: str | None, threads: int, needed: bool
           ) -> AbstractContextManager[Executor]:
    """Where a command's independent tasks run, its numerical threads held to `threads`
    (`distributed.executor`): on Ray as asked when the run has tasks to fan out
    (`needed`), else in-process (the request is checked either way)."""
    from ..distributed import check_request, executor

    check_request(workers, address, threads)
    return executor(workers, address, threads=threads) if needed else \
        executor(threads=threads)


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """`name:1x3x224x224` → {"name": (1, 3, 224, 224)}."""
    shapes = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise InputError(f"--input-shape {value!r}: expected NAME:D1xD2x…, e.g. "
                             "input:1x3x224x224")
        shapes[name] = shape
    return shapes


def image_options(size: str | None, mean: str, std: str, layout: str, bgr: bool
                  ) -> ImageOptions:
    """Image preprocessing from command-line strings ("48x192", "0.5,0.5,0.5")."""
    from ..images import ImageOptions

    try:
        shape = tuple(int(v) for v in size.lower().split("x")) if size else None
        options = ImageOptions(shape, tuple(float(v) for v in mean.split(",")),
                               tuple(float(v) for v in std.split(",")), layout.upper(), bgr)
    except ValueError:
        raise InputError("image options: --image-size HxW, --image-mean and --image-std "
                         "as three comma-separated numbers") from None
    if shape is not None and (len(shape) != 2 or min(shape) < 1):
        raise InputError(f"--image-size {size!r}: expected HxW, e.g. 224x224")
    options.validate()
    return options


def image_flags(func: Command) -> Command:
    """The image preprocessing options of commands that read calibration images."""
    for option in reversed([
        click.option("--image-size", help="Images: HxW (default: the input's fixed size)."),
        click.option("--image-mean", default="0,0,0", show_default=True,
                     help="Images: per-channel mean, after scaling to [0, 1]."),
        click.option("--image-std", default="1,1,1", show_default=True,
                     help="Images: per-channel std, after scaling to [0, 1]."),
        click.option("--image-layout", default="NCHW", show_default=True,
                     help="NCHW or NHWC."),
        click.option("--bgr", is_flag=True, help="Images: BGR channel order instead of RGB."),
    ]):
        func = option(func)
    return func


@contextlib.contextmanager
def calibration_progress(silent: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for calibration passes (samples seen), when wanted."""
    if silent or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("calibrating (samples)", total=None)
        yield lambda samples: bar.advance(task, samples)


def json_text(data: object) -> str:
    """Indented JSON of a report (numpy values as lists)."""
    return json.dumps(data, indent=2, default=json_default)


def json_default(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class ByteSize(click.ParamType):
    """A size such as 4GB or 512MiB, in bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        from ..errors import InputError
        from ..memory import parse_size

        if isinstance(value, int):
            return value
        try:
            return parse_size(value, param.opts[0] if param else "--max-memory")
        except InputError as exc:
            self.fail(str(exc).split(": ", 1)[-1], param, ctx)


def max_memory_option(func: Command) -> Command:
    """`--max-memory SIZE`: the cap on what one calibration level may hold."""
    return click.option("--max-memory", type=ByteSize(), help="Cap what one level of "
                        "layer-wise calibration (refit, wanda, sparsegpt) may hold, e.g. 4GB "
                        "(decimal units; GiB binary); refused (exit 2) when a level needs "
                        "more.")(func)



def rounds_option(func: Command) -> Command:
    """--rounds of prune and sparsify."""
    return click.option("--rounds", type=int, default=1, show_default=True,
                        help="Reach the ratio (or sparsity, or budget) in this many rounds "
                        "on a cubic schedule, re-scoring, reconstructing and (with "
                        "--finetune-steps/--finetune-minutes, budget shared out) "
                        "fine-tuning between rounds (see README).")(func)
