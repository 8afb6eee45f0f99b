"""Output files: checked before any work, written together or not at all.

Every output of a command is first written to a temporary folder (`.onnxprune-*`)
beside its target, then all are renamed into place at the end (with Ctrl-C held
back for those few renames); on any failure every temporary file is removed and
the files that were there before are left untouched. A reader never sees a
half-written file, and a command never leaves one of its outputs without the
others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError

PREFIX = ".onnxprune-"


def unwritable(path: str | os.PathLike, exc: OSError) -> InputError:
    """The error for an output that cannot be written (full disk, permissions, ...)."""
    return InputError(f"{path}: cannot write ({exc.strerror or exc})")


class Transaction:
    """The outputs of one command, staged beside their targets until `commit`."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._folders: list[Path] = []

    def temp_path(self, target: str | os.PathLike) -> Path:
        """A temporary path with the target's name, in a new temporary folder in the
        target's directory; renamed onto the target at commit."""
        target = Path(target)
        try:
            folder = Path(tempfile.mkdtemp(dir=_directory(target), prefix=PREFIX))
        except OSError as exc:
            raise unwritable(target, exc) from None
        self._folders.append(folder)
        temp = folder / target.name
        self._staged.append((temp, target))
        return temp

    def add(self, temp: Path, target: str | os.PathLike) -> None:
        """Rename another file of a staged folder (a model's external data) at commit."""
        self._staged.append((temp, Path(target)))

    def write(self, target: str | os.PathLike, data: bytes | str) -> None:
        """Stage `data` (text as UTF-8) for `target`."""
        temp = self.temp_path(target)
        try:
            temp.write_bytes(data.encode() if isinstance(data, str) else data)
        except OSError as exc:
            raise unwritable(target, exc) from None

    def commit(self) -> None:
        """Rename every staged file into place (Ctrl-C waits until all are)."""
        with _interrupts_held():
            for temp, target in self._staged:
                try:
                    os.replace(temp, target)
                except OSError as exc:
                    raise unwritable(target, exc) from None
        self.abort()

    def abort(self) -> None:
        """Remove every temporary file and folder."""
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()


@contextlib.contextmanager
def transaction() -> Iterator[Transaction]:
    """Stage outputs in the block; commit them all when it ends, or remove them all
    when it raises (Ctrl-C included)."""
    outputs = Transaction()
    try:
        yield outputs
        outputs.commit()
    finally:
        outputs.abort()


def write_atomic(data: bytes | str, path: str | os.PathLike) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with transaction() as outputs:
        outputs.write(path, data)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C back while the block runs, then act on it (a Python-level handler:
    the signal may reach any thread, and Python answers it in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(*caught[0])
        elif caught and previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def _directory(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_writable(path: str | os.PathLike) -> None:
    """Refuse an output path that cannot be written, by trying (before any work)."""
    target = Path(path)
    if not str(path).strip():
        raise InputError("an output path is empty")
    directory = _directory(target)
    if not directory.is_dir():
        raise InputError(f"{target}: output directory does not exist")
    if target.is_dir():
        raise InputError(f"{target}: is a directory")
    if target.exists() and not os.access(target, os.W_OK):
        raise InputError(f"{target}: not writable")
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=PREFIX):
            pass
    except OSError as exc:
        raise InputError(f"{target}: not writable ({exc.strerror or exc})") from None


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (through symbolic links, relative paths and
    hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Before any work: every given output (option → path) is writable, no two are
    the same file, and none is one of the inputs (option → path)."""
    given = {flag: path for flag, path in outputs.items() if path is not None}
    for flag, path in given.items():
        if not str(path).strip():
            raise InputError(f"{flag}: the output path is empty")
    seen: list[tuple[str, str]] = []
    for flag, path in given.items():
        for other_flag, other in seen:
            if same_file(path, other):
                raise InputError(f"{flag} {path} and {other_flag} {other} are the same "
                                 "file; give each output its own path")
        for in_flag, source in inputs.items():
            if source and same_file(path, source):
                raise InputError(f"{flag} {path} is the input {in_flag} {source}; refusing "
                                 "to overwrite an input")
        seen.append((flag, path))
        check_writable(path)


@contextlib.contextmanager
def output_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A directory for a command's outputs: made when missing (its parent must exist)
    and, when the block fails, removed again if this made it and it is still empty."""
    folder = Path(path)
    if not str(path).strip():
        raise InputError("the output directory path is empty")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a directory")
    made = not folder.exists()
    if made:
        if not _directory(folder).is_dir():
            raise InputError(f"{folder}: its parent directory does not exist")
        try:
            folder.mkdir()
        except OSError as exc:
            raise unwritable(folder, exc) from None
    try:
        yield folder
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
