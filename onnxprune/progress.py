"""Progress bars on stderr (rich), shown only on a terminal and never when quiet."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

Advance = Callable[[int], None]


def wanted(quiet: bool) -> bool:
    """Whether to draw: not quiet, and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def bar(description: str, total: int | None = None, quiet: bool = False
        ) -> Iterator[Advance | None]:
    """A transient progress bar; yields `advance(steps)`, or None when not drawn."""
    if not wanted(quiet):
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda steps=1: progress.advance(task, steps)
