"""Command line: parse, call the API, print. Errors become one line on stderr."""

from __future__ import annotations

import click

from .. import __version__
from .common import Main


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxprune")
def main() -> None:
    """Structural pruning of ONNX models."""


# The command modules register themselves on `main`.
from . import analysis, finetuning, pruning, sparsifying, sweeping  # noqa: E402, F401

__all__ = ["main"]
