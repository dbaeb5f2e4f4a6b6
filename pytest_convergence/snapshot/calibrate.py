"""Tolerance from data: how far a case's history moves under rounding-sized perturbations.

``--convergence-calibrate=N`` trains each run N-1 more times, each as another machine's rounding
might train it: every weight moved by one unit in the last place before the first step and at a
few later ones (:mod:`..perturb`). The spread of their
checkpoints against the first run measures how sensitive the history is to rounding; the
recommended tolerance, the smallest under which every rerun would match its snapshot times a
margin, would have accepted all of them. Like Megatron-LM's golden values, it lets the worst
``miss_fraction`` of checkpoints miss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import tables
from ..perturb import Perturbation
from ..run import Run
from ..tolerance import Tolerance
from .compare import nonfinite_weights, relative_error, required_rtol, required_weight_rtol
from .format import Trajectory, checkpoint_steps

MARGIN = 3.0
"""Every recommendation is this times the largest spread seen: a simulated machine is one more draw,
and on the catalogue draws reached 2.65 times the largest of six reruns (docs/machines.md)."""
MAX_MISS_FRACTION = 0.5
"""Beyond half the checkpoints unmatched, a snapshot would compare nothing: the rtol must say it."""
CHAOTIC_EVENT_SHARE = 0.1
"""An event one ulp moves by a tenth of the run (seed-rmsprop-2.55 bfloat16 stalls at step 423 or
16,698 under calibration, 61,164 on a simulated machine) has no timing to compare: any step passes."""
UNBOUNDED_RTOL = 1.0
"""What an unmeasurable spread (a final loss NaN in one rerun only) records: any change of a
finite number passes, a number against NaN still fails."""


@dataclass(frozen=True)
class ForeignRun:
    """The same case and dtype trained elsewhere, read from that session's results file: another
    CPU's real kernels (``--convergence-kernels``) or another machine. Calibration measures its
    spread and outcome beside the one-ulp reruns'."""

    variant: str
    """What trained it: the results file's name (``avx2`` for ``avx2.json``)."""
    trajectory: Trajectory
    margins: dict[str, float] = field(default_factory=dict)
    """Each outcome decision's deciding quantity there, by rule (:mod:`..diagnosis.margins`)."""


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
    recommended_miss_fraction: float = 0.0
    """The share of checkpoints that may miss, when reruns diverge at other steps (else 0)."""
    recommended_weight_rtol: float = 0.0
    """The final weights' rtol, measured apart from the losses'."""
    divergence_unstable: bool = False
    """Some reruns ended in NaN and others finite: where the run diverges is chaotic."""

    @property
    def accepted_by_current(self) -> bool:
        return self.recommended_rtol <= self.current_rtol

    steps: int = 0
    """The run's length in steps: an event that moves by a large share of it is chaotic."""
    variants: tuple[str, ...] = ()
    """What the spread was measured across: this process's kernels, the one-ulp reruns, and each
    foreign run's variant (``native``, ``ulp*2``, ``avx2``...)."""
    near: tuple[str, ...] = ()
    """Outcomes across a decision whose measured move (times :data:`MARGIN`) reaches its threshold:
    no rerun took them, but another machine could."""

    @property
    def recommended_event_atol(self) -> int:
        """Steps an event may move: the margin times the largest move seen (0 if none moved); any
        step when one ulp moved an event by more than :data:`CHAOTIC_EVENT_SHARE` of the run."""
        largest = max(self.event_spread.values(), default=0)
        if self.steps and largest > CHAOTIC_EVENT_SHARE * self.steps:
            return self.steps
        return math.ceil(MARGIN * largest)

    def tolerance(self) -> Tolerance:
        """What the calibration measured, as a tolerance a snapshot carries (``calibrated:``) and
        comparisons widen the configured one with: loss and weight rtol, event steps, and the
        outcomes seen when there were several (an unstable outcome)."""
        seen = tuple(sorted({*self.outcomes, *self.near}))
        rtol = self.recommended_rtol if math.isfinite(self.recommended_rtol) else UNBOUNDED_RTOL
        return Tolerance(
            rtol=rtol,
            event_rtol=0.0,
            event_atol=self.recommended_event_atol,
            miss_fraction=self.recommended_miss_fraction,
            weight_rtol=self.recommended_weight_rtol
            if math.isfinite(self.recommended_weight_rtol)
            else UNBOUNDED_RTOL,
            outcomes=seen if len(seen) > 1 else (),
            divergence_unstable=self.divergence_unstable,
            variants=tuple(self.variants),
        )

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
            f"{self.recommended_weight_rtol:.2e}",
            f"±{self.recommended_event_atol}",
            ",".join(sorted(set(self.outcomes)))
            + (f" (near {','.join(self.near)})" if self.near else "")
            + (" (NaN or not)" if self.divergence_unstable else ""),
            " ".join(self.variants),
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
    "weights rtol",
    "events",
    "outcomes",
    "measured across",
)


def calibrate(
    base: Run,
    others: list[Run],
    *,
    current_rtol: float,
    miss_fraction: float,
    foreign: Sequence[ForeignRun] = (),
    variant: str = "native",
) -> Calibration:
    """The spread of ``base`` against its one-ulp reruns ``others`` and the ``foreign`` runs of
    other kernels or machines; ``variant`` names the kernels ``base`` trained with."""
    steps = checkpoint_steps(base.history.steps)
    reference = base.history.loss[steps - 1]
    # What compare would need to accept each rerun (final loss, checkpoints, weights), so the
    # recommendation is exactly what the snapshot comparison accepts, times the margin.
    stored = _as_stored(base, current_rtol)
    reruns = [_as_stored(run, current_rtol) for run in others]
    reruns += [f.trajectory for f in foreign if np.array_equal(f.trajectory.steps, stored.steps)]
    spreads = np.zeros(steps.size)
    for rerun in reruns:
        spreads = np.maximum(spreads, relative_error(reference, rerun.losses))
    finite = spreads[np.isfinite(spreads)]
    # A rerun that ends finite where the base ends NaN (or the reverse): whether the run diverges
    # is chaotic, and compare then judges the history before the first NaN only (tfkeras-token
    # float16 diverges at step 5 or never, by one ulp).
    divergence_unstable = any(
        bool(np.isfinite(stored.final_loss)) != bool(np.isfinite(rerun.final_loss))
        or nonfinite_weights(stored) != nonfinite_weights(rerun)
        for rerun in reruns
    )
    # A run that diverges (NaN) a few steps earlier or later has checkpoints no rtol can match (a
    # number against NaN): those may miss, MARGIN times the share seen, so the rtol measures the rest.
    unmatched = (
        0.0
        if divergence_unstable
        else max((_unmatchable_share(stored, rerun) for rerun in reruns), default=0.0)
    )
    allowed_miss = min(max(miss_fraction, MARGIN * unmatched), MAX_MISS_FRACTION)
    needed = max(
        (required_rtol(stored, rerun, allowed_miss, divergence_unstable) for rerun in reruns), default=0.0
    )
    weights_needed = max(
        (required_weight_rtol(stored, rerun, divergence_unstable) for rerun in reruns), default=0.0
    )
    events: dict[str, int] = {}
    base_events = stored.events
    for rerun in reruns:
        for key, value in rerun.events.items():
            if key in base_events and (value == -1) == (base_events[key] == -1):
                events[key] = max(events.get(key, 0), abs(value - base_events[key]))
    measured = [variant] + [f"ulp*{len(others)}"] * bool(others) + [f.variant for f in foreign]
    return Calibration(
        case=base.case,
        dtype=base.dtype,
        runs=1 + len(reruns),
        median_spread=float(np.median(finite)) if finite.size else float("inf"),
        max_spread=float(np.max(spreads)) if spreads.size else 0.0,
        recommended_rtol=needed * MARGIN,  # 0: every rerun was bit-identical
        current_rtol=current_rtol,
        outcomes=tuple(rerun.outcome for rerun in [stored, *reruns]),
        event_spread=events,
        recommended_miss_fraction=allowed_miss if allowed_miss > miss_fraction else 0.0,
        recommended_weight_rtol=weights_needed * MARGIN,
        divergence_unstable=divergence_unstable,
        steps=base.history.steps,
        variants=tuple(measured),
        near=_near_outcomes(base, others, foreign),
    )


def _near_outcomes(base: Run, others: list[Run], foreign: Sequence[ForeignRun]) -> tuple[str, ...]:
    """The outcomes across each of ``base``'s decisions that the reruns moved, times the margin,
    to its threshold or beyond (:mod:`..diagnosis.margins`)."""
    moved: dict[str, float] = {}
    for values in [{m.rule: m.value for m in run.diagnosis.margins} for run in others] + [
        f.margins for f in foreign
    ]:
        for margin in base.diagnosis.margins:
            if margin.rule in values and math.isfinite(values[margin.rule]):
                shift = abs(values[margin.rule] - margin.value)
                moved[margin.rule] = max(moved.get(margin.rule, 0.0), shift)
    near = {
        base.outcome_across(margin)
        for margin in base.diagnosis.margins
        if moved.get(margin.rule, 0.0) > 0 and MARGIN * moved[margin.rule] >= margin.distance
    }
    return tuple(sorted(near - {base.outcome}))


def _unmatchable_share(old: Trajectory, new: Trajectory) -> float:
    common, old_index, new_index = np.intersect1d(old.steps, new.steps, return_indices=True)
    if not common.size:
        return 0.0
    errors = relative_error(old.losses[old_index], new.losses[new_index])
    return float(np.mean(np.isinf(errors)))


def _as_stored(run: Run, rtol: float) -> Trajectory:
    """The run as its snapshot would read back: through the text, as real comparisons see it."""
    return Trajectory.parse(Trajectory.from_run(run, Tolerance(rtol=rtol)).render())


def format_table(calibrations: list[Calibration]) -> list[str]:
    return tables.format_table(HEADERS, [c.row() for c in calibrations])


def calibration_perturbations(count: int) -> list[Perturbation]:
    """``count`` simulated machines of the calibration stream (:mod:`..perturb`): every weight
    one ulp away at the start and at a few later steps, the rounding another kernel brings."""
    return [Perturbation(seed, stream="calibrate") for seed in range(1, count + 1)]
