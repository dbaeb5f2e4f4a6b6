"""What each weight did: when it froze and why, when its gradient first became 0, whether it cycles.

A run's loss is one number; its weights are several, and they rarely stop together. A float32
kernel can freeze at its spacing while the bias drifts on by 1e-11 a step, or a float16 kernel
freeze while the bias alone cycles. Read per weight (per tensor: ``dense/kernel`` is one), the
history says so; read as a whole it says "still falling" or "the updates overshoot".

Pure numpy over what the ``loop`` and ``xla`` engines record per step and weight
(:attr:`History.tensor_update`, :attr:`History.tensor_checksum`, :attr:`History.gradient_zero`); ``fit``
records none of it, and then there is nothing to say per weight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..numerics import spacing
from .cycles import find_cycle

if TYPE_CHECKING:
    from ..history import History

FREEZE_CAUSES = {
    "gradient-zero": "its gradient is exactly 0",
    "update-arithmetic-zero": "the optimizer's update computes to exactly 0 in the weights' dtype",
    "update-below-half-spacing": "its updates are below half its dtype's spacing, so they round away",
    "unknown": "its gradient is not 0 and its update not below half its spacing: no rounding explains it",
}
"""Why a weight stopped changing, in words (the keys are ``freeze_cause`` values)."""


@dataclass(frozen=True)
class WeightEvents:
    """One trainable weight's events; steps are 1-based, as in the loss history."""

    name: str
    frozen_since_step: int | None
    """First step of the unchanged stretch that runs to the end (long enough to count, see
    :func:`min_frozen_steps`); None while it still moves. 1 when it never moved."""
    freeze_cause: str | None
    """Why it stays frozen (a key of :data:`FREEZE_CAUSES`), read at the final weights."""
    last_change: float | None
    """Its largest change at its last moving step (None when it never moved)."""
    first_zero_gradient_step: int | None
    """First step whose gradient for this weight was exactly 0 everywhere (None: never)."""
    zero_gradient_since_step: int | None
    """First step from which its gradient was exactly 0 at every step to the end (None: not)."""
    cycle_period: int | None
    """Period, in steps, of an exact cycle of its values at the end of the run (None: none)."""
    cycle_start_step: int | None

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def as_evidence(self) -> dict[str, Any]:
        return asdict(self)


def min_frozen_steps(steps: int) -> int:
    """Unchanged trailing steps that make a freeze (and, for every weight, a stall): 10% of the
    run, at least 3, at most 100."""
    return max(3, min(100, steps // 10))


def weight_events(history: History) -> list[WeightEvents]:
    """Every trainable weight's events, in the model's order; empty without per-weight records."""
    updates = np.asarray(history.tensor_update)
    if updates.ndim != 2 or updates.shape[1] != len(history.tensor_names) or not updates.shape[1]:
        return []
    steps = updates.shape[0]
    zeros = np.asarray(history.gradient_zero, bool)
    has_zeros = zeros.shape == updates.shape
    checksums = np.asarray(history.tensor_checksum)
    events = []
    for column, name in enumerate(history.tensor_names):
        moved = np.flatnonzero((updates[:, column] != 0) | np.isnan(updates[:, column]))
        last = int(moved[-1]) if moved.size else -1  # 0-based index of its last change
        unchanged = steps - 1 - last
        frozen = unchanged >= min_frozen_steps(steps)
        frozen_since = last + 2 if frozen else None
        first_zero = zero_since = None
        if has_zeros:
            flags = zeros[:, column]
            hits = np.flatnonzero(flags)
            first_zero = int(hits[0]) + 1 if hits.size else None
            if flags[-1]:
                misses = np.flatnonzero(~flags)
                zero_since = int(misses[-1]) + 2 if misses.size else 1
        period = start = None
        if not frozen and checksums.shape == updates.shape:
            cycle = find_cycle(checksums[:, column])
            if cycle is not None and cycle.period > 1:
                period, start = cycle.period, cycle.start + 1
        events.append(
            WeightEvents(
                name=name,
                frozen_since_step=frozen_since,
                freeze_cause=_freeze_cause(history, name, frozen_since, zero_since) if frozen else None,
                last_change=float(updates[last, column]) if last >= 0 else None,
                first_zero_gradient_step=first_zero,
                zero_gradient_since_step=zero_since,
                cycle_period=period,
                cycle_start_step=start,
            )
        )
    return events


def _freeze_cause(history: History, name: str, frozen_since: int | None, zero_since: int | None) -> str:
    """Why the weight stays where it froze, each cause checked on this weight's own numbers."""
    if zero_since is not None and frozen_since is not None and zero_since <= frozen_since:
        return "gradient-zero"
    gradient = history.final_gradients.get(name)
    if zero_since is None and gradient is not None and not np.any(np.asarray(gradient, np.float64)):
        return "gradient-zero"  # no per-step flags: the final gradient says it
    intended = (history.intended_update or {}).get(name)
    expressible = (history.update_in_variable_dtype or {}).get(name)
    if (
        intended is not None
        and expressible is not None
        and np.any(np.asarray(intended, np.float64))
        and not np.any(np.asarray(expressible, np.float64))
    ):
        return "update-arithmetic-zero"
    weights = history.final_weights.get(name)
    # the update as the weights' dtype computes it (else as float64 does): what meets the spacing
    update = expressible if expressible is not None else intended
    if update is None or weights is None:
        return "unknown"  # without the optimizer's own update, a gradient says nothing about rounding
    ratio = np.abs(np.asarray(update, np.float64)) / spacing(np.asarray(weights), history.variable_dtype)
    return "update-below-half-spacing" if float(np.nanmax(ratio, initial=0.0)) < 0.5 else "unknown"
