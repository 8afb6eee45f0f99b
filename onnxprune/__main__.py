"""`onnxprune` and `python -m onnxprune`: the command line, with Ctrl-C during
start-up (while onnx and onnxruntime are imported) answered like Ctrl-C anywhere:
one line, exit status 130."""

from __future__ import annotations

import sys


def run() -> None:
    """Import the commands, then run them."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("onnxprune: interrupted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
