"""The dtype facts the diagnosis states: the spacing of a weight's neighbours, the smallest
positive number, and numbers printed as they are (not rounded into a different claim)."""

from __future__ import annotations

import numpy as np


def spacing(weights: np.ndarray, dtype: str) -> np.ndarray:
    """Distance to the next representable number away from zero, in the weights' dtype."""
    if dtype == "bfloat16":
        values = np.abs(np.asarray(weights).astype(np.float32))
        exponent = np.floor(np.log2(np.maximum(values, 2.0**-126)))
        return (2.0 ** (exponent - 7)).astype(np.float64)
    typed = np.asarray(weights).astype(np.dtype(dtype))
    return np.abs(np.spacing(np.abs(typed))).astype(np.float64)


def tiny(dtype: str) -> float:
    """Smallest positive (subnormal) number of a dtype."""
    if dtype == "bfloat16":
        return 2.0**-133
    return float(np.finfo(np.dtype(dtype)).smallest_subnormal)


def fmt(value: float | None) -> str:
    """Four significant digits; ``n/a`` for a missing value."""
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def fmt_relative(value: float) -> str:
    """A relative change as a signed percentage, never rounded to a misleading 0."""
    if value == 0:
        return "0%"
    percent = 100 * value
    text = f"{percent:+.2g}%"
    return text if float(text[:-1]) != 0 else f"{percent:+.1e}%"


def fmt_range(low: float, high: float) -> tuple[str, str]:
    """Two ends of a range with enough digits to differ where the numbers do."""
    for digits in (4, 6, 8, 10, 17):
        a, b = f"{low:.{digits}g}", f"{high:.{digits}g}"
        if a != b or low == high:
            return a, b
    return repr(low), repr(high)
