"""Errors raised by onnxprune. Every one carries a message fit for a user."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, shortened for a one-line error."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class OnnxPruneError(Exception):
    """Base class: a clear, one-line reason why an operation could not be done."""

    exit_code = 1


class InputError(OnnxPruneError):
    """Bad user input: a missing or corrupt file, an out-of-range option."""

    exit_code = 2


class ModelError(OnnxPruneError):
    """The model itself cannot be processed (fails the checker, unsupported construct)."""

    exit_code = 3


class VerificationError(OnnxPruneError):
    """A rewritten model failed verification; nothing was written."""

    exit_code = 4
