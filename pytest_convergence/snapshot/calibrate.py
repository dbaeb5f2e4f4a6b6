"""Tolerance from data: how far a case's history moves under rounding-sized perturbations.

``--convergence-calibrate=N`` trains each run N-1 more times, each starting from the same initial
weights moved by one unit in the last place (see :func:`calibration_cases`). The spread of their
checkpoints against the first run measures how sensitive the history is to rounding; the
recommended tolerance, the smallest under which every rerun would match its snapshot times a
margin, would have accepted all of them. Like Megatron-LM's golden values, it lets the worst
``miss_fraction`` of checkpoints miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import tables
from ..diagnosis import _spacing
from ..run import Run
from ..tolerance import Tolerance
from .compare import relative_error, required_rtol
from .format import Trajectory, checkpoint_steps

if TYPE_CHECKING:
    from ..case import Case

MARGIN = 2.0


@dataclass(frozen=True)
class Calibration:
    """The spread of one case and dtype over its calibration runs, and what it recommends."""

    case: str
    dtype: str
    runs: int
    median_spread: float
    max_spread: float
    recommended_rtol: float
    current_rtol: float
    outcomes: tuple[str, ...]
    event_spread: dict[str, int]

    @property
    def accepted_by_current(self) -> bool:
        return self.recommended_rtol <= self.current_rtol

    def row(self) -> tuple[str, ...]:
        return (
            self.case,
            self.dtype,
            str(self.runs),
            f"{self.median_spread:.2e}",
            f"{self.max_spread:.2e}",
            f"{self.recommended_rtol:.2e}",
            f"{self.current_rtol:.2e}",
            "yes" if self.accepted_by_current else "NO",
            ",".join(sorted(set(self.outcomes))),
        )


HEADERS = (
    "case",
    "dtype",
    "runs",
    "median spread",
    "max spread",
    "recommended rtol",
    "rtol now",
    "fits",
    "outcomes",
)


def calibrate(base: Run, others: list[Run], *, current_rtol: float, miss_fraction: float) -> Calibration:
    steps = checkpoint_steps(base.steps)
    reference = base.loss[steps - 1]
    spreads = np.zeros(steps.size)
    for run in others:
        spreads = np.maximum(spreads, relative_error(reference, run.loss[steps - 1]))
    finite = spreads[np.isfinite(spreads)]
    # What compare would need to accept each rerun (final loss, checkpoints, weights), so the
    # recommendation is exactly what the snapshot comparison accepts, times the margin.
    stored = _as_stored(base, current_rtol)
    needed = max(
        (required_rtol(stored, _as_stored(run, current_rtol), miss_fraction) for run in others), default=0.0
    )
    events: dict[str, int] = {}
    base_events = _events(base)
    for run in others:
        for key, value in _events(run).items():
            if key in base_events:
                events[key] = max(events.get(key, 0), abs(value - base_events[key]))
    return Calibration(
        case=base.case,
        dtype=base.dtype,
        runs=1 + len(others),
        median_spread=float(np.median(finite)) if finite.size else float("inf"),
        max_spread=float(np.max(spreads)) if spreads.size else 0.0,
        recommended_rtol=needed * MARGIN,  # 0: every rerun was bit-identical
        current_rtol=current_rtol,
        outcomes=tuple(run.outcome for run in [base, *others]),
        event_spread=events,
    )


def _as_stored(run: Run, rtol: float) -> Trajectory:
    """The run as its snapshot would read back: through the text, as real comparisons see it."""
    return Trajectory.parse(Trajectory.from_run(run, Tolerance(rtol=rtol)).render())


def _events(run: Run) -> dict[str, int]:
    return {k: int(v) for k, v in run.diagnosis.evidence.items() if k.endswith("_step") and v is not None}


def format_table(calibrations: list[Calibration]) -> list[str]:
    return tables.format_table(HEADERS, [c.row() for c in calibrations])


def calibration_cases(case: Case, base: Run, count: int) -> list[Case]:
    """``count`` copies of ``case`` starting one unit in the last place away from the base run.

    Every initial weight is moved by one unit in the last place of :func:`nudge_dtype` (for most
    runs, to its neighbour in the variables' dtype), in a random direction per weight: the size
    of the rounding differences a new kernel or a reordered sum brings with a framework upgrade.
    Data, batches and seed are unchanged, so any spread is the history's sensitivity to
    rounding, which is what a tolerance between versions has to absorb.
    """
    copies = []
    dtype = nudge_dtype(base)
    for offset in range(1, count + 1):
        rng = np.random.default_rng(case.seed + offset)
        start = [_one_ulp_away(np.asarray(w), dtype, rng) for w in base.initial_weights.values()]
        copies.append(case.with_(initial_weights=start))
    return copies


PRECISION_BITS = {"bfloat16": 8, "float16": 11, "float32": 24, "float64": 53}


def nudge_dtype(run: Run) -> str:
    """The coarsest dtype the run's arithmetic passes through, whose unit in the last place is the
    size of the rounding an upgrade changes.

    Usually the variables' dtype; but Keras 3 computes a float64 model's loss in float32, and a
    mixed_float16 model computes in float16: there a new kernel's rounding is a float32 (float16)
    ulp, and nudging by a float64 (float32) ulp would recommend a tolerance that the real
    upgrade exceeds (measured: spirals in float64, TensorFlow 2.19 -> 2.21).
    """
    used = [d for d in (run.variable_dtype, run.compute_dtype, run.loss_dtype) if d in PRECISION_BITS]
    return min(used, key=PRECISION_BITS.__getitem__, default=run.variable_dtype)


def _one_ulp_away(weights: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    direction = rng.choice([-1.0, 1.0], size=weights.shape)
    values = weights.astype(np.float64)
    if dtype in ("float16", "float32", "float64") and weights.dtype == np.dtype(dtype):
        typed = weights.astype(dtype)
        return np.nextafter(typed, (direction * np.inf).astype(dtype)).astype(np.float64)
    # bfloat16 has no numpy type; a coarser dtype than the weights' moves them by its spacing
    return values + direction * _spacing(values, dtype)
