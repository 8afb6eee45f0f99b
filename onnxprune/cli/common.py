"""What the commands share: one-line errors with documented exit statuses, option
parsing, progress on a terminal, atomic JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
from pathlib import Path

import click

from ..errors import InputError, OnnxPruneError
from ..files import write_atomic

INTERNAL_ERROR = 70


def _fail(message: str, code: int) -> None:
    click.echo(f"onnxprune: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    """Turn every failure into one clear line and a documented exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OnnxPruneError as exc:
            _fail(str(exc), exc.exit_code)
        except MemoryError:
            _fail("out of memory", INTERNAL_ERROR)
        except Exception as exc:  # never show a traceback to a user
            if os.environ.get("ONNXPRUNE_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set ONNXPRUNE_DEBUG=1 for a "
                  "traceback)", INTERNAL_ERROR)

    return wrapper


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


def image_options(size: str | None, mean: str, std: str, layout: str, bgr: bool):
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


def image_flags(func):
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
def calibration_progress(silent: bool):
    """A progress bar on stderr for calibration passes (samples seen), when wanted."""
    if silent or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("calibrating (samples)", total=None)
        yield lambda samples: bar.advance(task, samples)


def write_json_atomic(data: dict, path: str) -> None:
    """Write JSON through a temp file in the same directory, then rename."""
    check_writable(Path(path))
    write_atomic(json.dumps(data, indent=2, default=json_default), path)


def json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def check_writable(path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InputError(f"{path}: output directory does not exist")
    try:  # by trying: permission bits do not bind every user (root), nor show a read-only mount
        with tempfile.TemporaryFile(dir=directory, prefix=".onnxprune-"):
            pass
    except OSError:
        raise InputError(f"{path}: not writable") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{path}: not writable")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")

