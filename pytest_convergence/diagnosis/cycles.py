"""Exact cycles at the end of a series (a loss history, a weight's checksums), of any period.

A run at the edge of its dtype's precision often ends in an exact cycle: the same values in the
same order, forever. Its period can be 2 or 184 steps (a float32 MSE run whose loss repeats every
92 steps and whose weights every 184). Looking for periods up to a fixed ceiling calls the long
ones a plateau, and trying every period is quadratic; the prefix function of the reversed series
(Knuth-Morris-Pratt) gives the smallest period of every tail in one linear pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPEATS = 9
"""A cycle counts when its values repeat at least this many times (the tail is REPEATS periods)."""
MIN_SPAN = 64
"""...and the repeating tail is at least this many steps longer than one period: a handful of
equal values is chance, not a cycle."""


@dataclass(frozen=True)
class Cycle:
    """The series repeats with ``period`` from ``start`` (0-based index) to its end."""

    period: int
    start: int

    def span(self, length: int) -> int:
        return length - self.start


def tail_periods(values: np.ndarray) -> np.ndarray:
    """``periods[m - 1]``: the smallest period of the last ``m`` values, for every ``m``.

    Values are compared by their bits (``-0.0`` and ``0.0`` differ, a NaN equals itself), as an
    exact cycle repeats the very same numbers. The smallest period never shrinks as ``m`` grows.
    """
    series = np.ascontiguousarray(np.asarray(values, np.float64)[::-1]).view(np.int64).tolist()
    n = len(series)
    border = [0] * n
    k = 0
    for i in range(1, n):
        value = series[i]
        while k and series[k] != value:
            k = border[k - 1]
        if series[k] == value:
            k += 1
        border[i] = k
    return np.arange(1, n + 1) - np.asarray(border, np.int64)


def find_cycle(values: np.ndarray) -> Cycle | None:
    """The shortest exact cycle the series ends in, or None.

    A cycle needs its last ``max(REPEATS * period, MIN_SPAN + period)`` values to repeat with its
    period; it is then extended back as far as the values repeat. A constant tail (period 1) is
    returned as such: the caller tells "flat" from "cycling".
    """
    length = int(np.asarray(values).shape[0])
    if length < MIN_SPAN + 1:
        return None
    periods = tail_periods(values)
    spans = np.arange(1, length + 1)
    long_enough = (spans >= REPEATS * periods) & (spans >= MIN_SPAN + periods)
    found = np.flatnonzero(long_enough)
    if not found.size:
        return None
    period = int(periods[found[0]])  # the smallest period qualifies first: periods never shrink
    longest = int(np.flatnonzero(periods == period)[-1]) + 1
    return Cycle(period=period, start=length - longest)
