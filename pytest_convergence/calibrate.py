"""Tolerance from data: how far a case's history moves under harmless perturbations.

``--convergence-calibrate=N`` trains each run N-1 more times, each with another seed (which
changes the shuffle order and any dropout) and the rows of the data permuted (which changes the
order of the sums inside each batch), starting from the same initial weights. The spread of their
checkpoints against the first run measures how much noise the history has; a tolerance of that
spread times a margin would have accepted every one of them. Like Megatron-LM's golden values, the
recommendation ignores the worst ``miss_fraction`` of checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .compare import relative_error, required_rtol
from .run import Run
from .tolerance import Tolerance
from .trajectory import Trajectory, checkpoint_steps

if TYPE_CHECKING:
    from .case import Case

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
    floor = (
        float(np.finfo(np.float32).eps) if base.loss_dtype != "float64" else float(np.finfo(np.float64).eps)
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
        recommended_rtol=max(needed * MARGIN, floor),
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
    rows = [HEADERS, *[c.row() for c in calibrations]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def calibration_cases(case: Case, base: Run, count: int) -> list[Case]:
    """``count`` perturbed copies of ``case``: another seed, permuted rows, the base run's start."""
    start = [np.asarray(w, dtype=np.float64) for w in base.initial_weights.values()]
    copies = []
    for offset in range(1, count + 1):
        order = np.random.default_rng(case.seed + offset).permutation(case.num_samples)
        copies.append(
            case.with_(
                seed=case.seed + offset,
                x=_rows(case.x, order),
                y=_rows(case.y, order),
                initial_weights=start,
            )
        )
    return copies


def _rows(data: Any, order: np.ndarray) -> Any:
    if isinstance(data, Mapping):
        return {key: np.asarray(value)[order] for key, value in data.items()}
    return np.asarray(data)[order]
