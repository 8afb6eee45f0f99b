"""Op rules, one module per op family. Importing this package registers them all."""

from . import (  # noqa: F401
    concat_split,
    conv,
    elementwise,
    fused,
    gather,
    matmul,
    norm,
    pool,
    quantize,
    recurrent,
    reduce,
    shape,
    terminal,
)
from .base import RULES, Change, Rule, register, rule_for

__all__ = ["RULES", "Change", "Rule", "register", "rule_for"]
