"""How far each outcome decision is from its threshold, and which outcomes another machine could flip.

Every outcome but ``diverged`` compares a quantity with a threshold: the loss's relative change over
the last tenth with the 0.1% plateau rule (and the swing rule beside it), the unchanged steps at the
end with the length a stall needs, a cycle's or a constant tail's span with the span it needs, the
steps the loss has been 0 with the run's end. Another CPU's kernels round differently and move those
quantities a little (docs/machines.md measures how far, per kernel variant). A run whose quantity
lies within that move of its threshold is *borderline*: its outcome is one of two, and which one
depends on the machine. It is reported with its alternative (``plateau (borderline: descending at
-0.0999% vs the -0.1% plateau rule)``), and an expectation or snapshot of either outcome accepts it.

Two kinds of margin count: the decision that chose the outcome (its alternative is what the rules
after it decide), and a near miss of a rule checked before it (its alternative is that rule's
outcome), since another machine could make that rule fire first. This module measures; the order
of the rules and the alternatives are :func:`..rules.diagnose`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..outcome import Outcome
from .cycles import MIN_SPAN, REPEATS, tail_periods

RELATIVE_BAND = 0.1
"""A continuous quantity within this share of its threshold is borderline, in a run whose arithmetic
is float32 or float64 (docs/machines.md: the moves measured across real kernel variants)."""
HALF_RELATIVE_BAND = 2.0
"""...and within twice its threshold in a run that computes in float16 or bfloat16, whose last
tenth's relative change another CPU's kernels moved by up to 0.64 times the plateau rule where it
sat near it (two-moons mixed_float16: -0.036% here, -0.080% capped to AVX2, -0.1% on an AMD EPYC;
docs/machines.md)."""
STEPS_BAND = 0.02
"""A step count within this share of the run (at least one step; short of the count the rule
needs, at most half of it) of its threshold is borderline (docs/machines.md)."""


@dataclass(frozen=True)
class Margin:
    """One outcome decision: the deciding quantity, its threshold, and the outcome across it."""

    rule: str
    """``plateau``, ``swing``, ``swing-range``, ``stall``, ``cycle``, ``flat`` or ``zero``."""
    value: float
    threshold: float
    alternative: Outcome | None
    """The outcome the run gets when the quantity crosses the threshold (None: not worked out,
    since the decision is clear)."""
    steps: int = 0
    """The run's length, for a step count's band; 0 for a relative quantity."""
    half: bool = False
    """The run computes in float16 or bfloat16, where other kernels move a quantity further."""

    @property
    def distance(self) -> float:
        """How far the quantity is from the threshold, in the quantity's units."""
        return abs(self.value - self.threshold)

    @property
    def band(self) -> float:
        """How far another machine could move the quantity."""
        if self.steps:
            # the event's start moves by a share of the run; short of the event (a near miss) there
            # is no start to move, and the count must be at least half what the rule needs, or a run
            # whose weights move at every step would be "near" a stall of 100 steps in 100,000
            share = math.ceil(STEPS_BAND * self.steps)
            fired = self.value > self.threshold
            return float(max(1, share if fired else min(share, math.ceil(self.threshold) // 2)))
        # the loss's relative changes carry half precision's noise; the swing's ratio of two of
        # them does not, as long as the change is not itself noise (then the range rule decides)
        noisy = self.half and self.rule in ("plateau", "swing-range")
        return (HALF_RELATIVE_BAND if noisy else RELATIVE_BAND) * abs(self.threshold)

    @property
    def share(self) -> float:
        """The distance as a share of the band (below 1: borderline), comparable across rules."""
        return self.distance / self.band if self.band else math.inf

    @property
    def borderline(self) -> bool:
        return self.distance <= self.band

    def phrase(self) -> str:
        """The alternative and why, as the outcome's parenthesis shows it."""
        alt = self.alternative.value if self.alternative else "another outcome"
        if self.rule == "plateau":
            return f"{alt} at {_percent(self.value)} vs the {_percent(self.threshold)} plateau rule"
        if self.rule == "swing":
            return f"{alt}: the loss's range is {self.value:.4g} times twice its change vs the swing rule's 1"
        if self.rule == "swing-range":
            shown, rule = _percent(self.value), _percent(self.threshold)
            return f"{alt}: the loss's range is {shown} of it vs the swing rule's {rule}"
        count, needed = int(self.value), math.ceil(self.threshold)
        what = {
            "stall": f"no weight changed for the last {count} steps, a stall needs {needed}",
            "cycle": f"the loss repeats exactly for the last {count} steps, a cycle needs {needed}",
            "flat": f"the loss is exactly constant for the last {count} steps, a plateau needs {needed}",
            "zero": f"the loss is exactly 0 for only the last {count} step{'s' if count != 1 else ''}",
        }[self.rule]
        return f"{alt}: {what}"

    def as_evidence(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "value": self.value,
            "threshold": self.threshold,
            "margin": self.distance,
            "band": self.band,
            "alternative": self.alternative.value if self.alternative else None,
            "borderline": self.borderline,
        }


def _percent(value: float) -> str:
    """Four significant digits: a borderline value differs from its threshold in the third."""
    return f"{value * 100:.4g}%"


def closest(margins: tuple[Margin, ...]) -> Margin | None:
    """The borderline margin nearest its threshold, or None when every decision is clear."""
    near = [m for m in margins if m.borderline]
    return min(near, key=lambda m: m.share) if near else None


def alternatives_in(evidence: dict[str, Any]) -> tuple[str, ...]:
    """The borderline alternatives a diagnosis's evidence records (a results file's run), in order."""
    margins = evidence.get("margins") or []
    found = [m.get("alternative") for m in margins if isinstance(m, dict) and m.get("borderline")]
    return tuple(dict.fromkeys(str(o) for o in found if o))


def counted(
    rule: str, value: int, needed: int, steps: int, alternative: Outcome | None, half: bool = False
) -> Margin:
    """A rule that fires at ``value >= needed`` steps. The threshold sits half a step below
    ``needed``, so one step short and ``needed`` itself are equally near it."""
    return Margin(rule, float(value), needed - 0.5, alternative, steps=steps, half=half)


# ----------------------------------------------------------------------- the rules' quantities
def trend(
    change: float,
    swing: bool,
    swing_ratio: float,
    relative_swing: float,
    threshold: float,
    half: bool = False,
) -> list[Margin]:
    """The trend rule: descending when the change over the window falls below ``-threshold``,
    unless the loss swings (its range above twice the change and above ``threshold``), which
    makes it a plateau. Each condition whose crossing would flip the outcome is a margin."""
    falling = change < -threshold
    if not swing:
        margins = [
            Margin(
                "plateau", change, -threshold, Outcome.PLATEAU if falling else Outcome.DESCENDING, half=half
            )
        ]
        if falling:  # a swing would make it a plateau: a near miss when one condition fails
            wide, ranged = swing_ratio > 1.0, relative_swing > threshold
            if wide and not ranged:
                margins.append(Margin("swing-range", relative_swing, threshold, Outcome.PLATEAU, half=half))
            elif ranged and not wide:
                margins.append(Margin("swing", swing_ratio, 1.0, Outcome.PLATEAU, half=half))
        return margins
    if not falling:
        return []  # flat and swinging: a plateau on both counts, no single crossing flips it
    return [
        Margin("swing", swing_ratio, 1.0, Outcome.DESCENDING, half=half),
        Margin("swing-range", relative_swing, threshold, Outcome.DESCENDING, half=half),
    ]


def stall_near_miss(weights_changed: np.ndarray, needed: int, half: bool = False) -> Margin | None:
    """Unchanged steps at the end, short of a stall."""
    changed = np.asarray(weights_changed, bool)
    if not changed.size:
        return None
    moved = np.flatnonzero(changed)
    still = changed.size - (int(moved[-1]) + 1 if moved.size else 0)
    return counted("stall", still, needed, changed.size, Outcome.STALLED, half)


def cycle_needed(period: int) -> int:
    """The span a cycle of ``period`` needs to count (:func:`.cycles.find_cycle`)."""
    return max(REPEATS * period, MIN_SPAN + period)


def tail_near_misses(loss: np.ndarray, flat_needed: int, half: bool = False) -> list[Margin]:
    """Exact cycles and constant tails the loss ends in that are short of counting: the longest
    tail of each period repeats at least twice but spans less than the rule needs."""
    length = int(loss.size)
    if length < 4:
        return []
    periods = tail_periods(loss)
    longest: dict[int, int] = {}
    for index, period in enumerate(periods.tolist()):
        longest[int(period)] = index + 1
    margins = []
    for period, span in longest.items():
        if span < 2 * period:
            continue
        if period == 1:
            needed = max(flat_needed, cycle_needed(1))
            if span < needed:
                margins.append(counted("flat", span, needed, length, Outcome.PLATEAU, half))
        elif span < cycle_needed(period):
            margins.append(counted("cycle", span, cycle_needed(period), length, Outcome.OSCILLATING, half))
    return [m for m in margins if m.borderline]
