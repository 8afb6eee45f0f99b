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
    """A transient progress bar; yields `advance(steps, status=None)` (`status`: text
    shown after the description), or None when not drawn."""
    if not wanted(quiet):
        yield None
        return
    from rich.console import Console
    from rich.errors import LiveError
    from rich.progress import Progress

    progress = Progress(console=Console(stderr=True), transient=True)
    try:
        progress.start()
    except LiveError:  # another bar is showing: stay silent
        yield None
        return
    try:
        task = progress.add_task(description, total=total)
        yield lambda steps=1, status=None: progress.update(
            task, advance=steps, **({"description": f"{description} {status}"}
                                    if status else {}))
    finally:
        progress.stop()
