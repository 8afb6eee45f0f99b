"""Op translations, one module per op family. Importing this package registers them."""

from __future__ import annotations

from . import (  # noqa: F401
    activation,
    conv,
    elementwise,
    fused,
    matmul,
    norm,
    pool,
    quantize,
    recurrent,
    reduce,
    resize,
    select,
    shape,
)
