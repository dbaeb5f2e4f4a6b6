"""The table printed at the end of a convergence session: one row per case and dtype."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import tables


@dataclass(frozen=True)
class SummaryRow:
    """What the summary shows of one run; plain values, so workers can send them as they are."""

    case: str
    dtype: str
    engine: str
    outcome: str
    final_loss: float
    steps: int
    steps_per_second: float
    converged: bool | None
    status: str
    loss_kind: str = "step"
    """What the final loss is: ``epoch`` (History's mean of the last epoch) or ``step``."""
    trace_seconds: float = math.nan
    """Time spent tracing and compiling before training (real runs spend most of a short run there)."""
    story: str = ""
    """The run's story (:func:`pytest_convergence.diagnosis.story.tell`) under ``--convergence-explain``, else
    empty; plain text, so it travels from xdist workers with the rest of the row."""
    borderline: str = ""
    """The other outcomes of a borderline decision, comma-separated (another machine's run may
    end in them: :mod:`pytest_convergence.diagnosis.margins`); empty when the outcome is clear."""
    backend: str = "tensorflow"
    """The Keras backend that trained it; the table shows the column once any run is not TensorFlow's."""
    other_seconds: float = math.nan
    """Time the plugin spent on the run outside building, tracing and training (probes,
    diagnosis, snapshot, anatomy, results record): what it adds to a plain training."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds of each phase (:data:`pytest_convergence.run.PHASES`), for ``--convergence-timing``."""

    @property
    def outcome_shown(self) -> str:
        return f"{self.outcome} (borderline: {self.borderline})" if self.borderline else self.outcome

    @classmethod
    def from_run(cls, run: object, status: str, explain: bool = False) -> SummaryRow:
        from ..run import Run

        assert isinstance(run, Run)
        story = ""
        if explain:
            from ..diagnosis.story import tell

            story = tell(
                run.history, case=run.case, dtype=run.dtype, engine=run.engine, diagnosis=run.diagnosis
            )
        history = run.history
        return cls(
            case=run.case,
            # a case that allows a dtype mismatch says what really trained
            dtype=run.dtype if not history.dtype_mismatch else f"{run.dtype} (trained {run.trained_dtype})",
            engine=run.engine,
            outcome=run.outcome,
            borderline=", ".join(o.value for o in run.diagnosis.outcomes[1:]),
            final_loss=history.final_loss,
            steps=history.steps,
            steps_per_second=run.steps_per_second,
            converged=None if history.target_loss is None else history.converged,
            status=status,
            loss_kind="epoch" if history.judged_on_epochs else "step",
            trace_seconds=run.timing.trace_time,
            story=story,
            backend=run.backend,
            other_seconds=run.timing.other_time if run.timing.phases else math.nan,
            phases=dict(run.timing.phases),
        )

    @classmethod
    def failed_to_train(
        cls,
        case: str,
        dtype: str,
        engine: str,
        steps: int,
        status: str = "error",
        backend: str = "tensorflow",
    ) -> SummaryRow:
        """The row of a training that raised: it still shows, with outcome ``error``; ``refused``
        when the case expected Keras to refuse this dtype."""
        return cls(
            case=case,
            dtype=dtype,
            engine=engine,
            outcome="error",
            final_loss=math.nan,
            steps=steps,
            steps_per_second=math.nan,
            converged=None,
            status=status,
            loss_kind="-",
            backend=backend,
        )


HEADERS = (
    "case",
    "dtype",
    "engine",
    "outcome",
    "final loss",
    "of",
    "steps",
    "steps/s",
    "trace s",
    "other s",
    "target",
    "test",
)
LEGEND = (
    "final loss: History's mean of the last epoch where an epoch has several batches (of: epoch), else "
    "the last step's loss (of: step); steps/s: training alone; trace s: tracing and compiling before it; "
    "other s: the plugin's own time (probes, diagnosis, snapshot, results; --convergence-timing "
    "shows each phase)"
)
BORDERLINE_LEGEND = (
    "borderline: the outcome's deciding quantity is within another machine's move of its threshold, "
    "so that machine's kernels could give the outcome after it; either meets an expectation "
    "(docs/machines.md)"
)


PRECISION_EDGE = ("stalled", "oscillating", "reached-zero")
"""Outcomes decided by single roundings: the ones XLA's reordered arithmetic can change."""


def engine_notes(rows: Iterable[SummaryRow]) -> list[str]:
    """A warning when ``xla`` decided an outcome at the dtype's precision edge: XLA fuses and
    reorders arithmetic, and on the catalogue that changed such outcomes (docs/engines.md)."""
    edge = [row for row in rows if row.engine == "xla" and row.outcome in PRECISION_EDGE]
    if not edge:
        return []
    names = ", ".join(f"{row.case}[{row.dtype}] {row.outcome}" for row in edge[:5])
    more = f" and {len(edge) - 5} more" if len(edge) > 5 else ""
    return [
        f"xla: {len(edge)} run(s) ended at their dtype's precision edge ({names}{more}); XLA reorders "
        "the arithmetic and can give another outcome than loop and fit there (docs/engines.md): "
        "confirm with --convergence-engine=loop"
    ]


def format_table(rows: Iterable[SummaryRow]) -> list[str]:
    """Aligned text rows, in the order the runs happened, and the legend of the columns."""
    rows = list(rows)
    body = [
        (
            row.case,
            row.dtype,
            row.engine,
            row.outcome_shown,
            "-" if row.outcome == "error" else _loss(row.final_loss),
            row.loss_kind,
            f"{row.steps:,}",
            _rate(row.steps_per_second),
            _seconds(row.trace_seconds),
            _seconds(row.other_seconds),
            {None: "-", True: "met", False: "missed"}[row.converged],
            row.status,
        )
        for row in rows
    ]
    if not body:
        return []
    legend = [LEGEND] + [BORDERLINE_LEGEND] * any(row.borderline for row in rows)
    if any(row.backend != "tensorflow" for row in rows):  # a backend column after dtype
        headers = (*HEADERS[:2], "backend", *HEADERS[2:])
        with_backend = [(*line[:2], row.backend, *line[2:]) for line, row in zip(body, rows)]
        return [
            *tables.format_table(headers, with_backend, right_aligned=(5, 7, 8, 9, 10), rule=True),
            *legend,
        ]
    return [*tables.format_table(HEADERS, body, right_aligned=(4, 6, 7, 8, 9), rule=True), *legend]


def format_timing(rows: Iterable[SummaryRow]) -> list[str]:
    """Each run's phases in seconds (``--convergence-timing``), and their totals: where a session's
    time went, the plugin's own (``other``) apart from building, tracing and training."""
    from ..run import PHASES, TRAINING_PHASES

    timed = [row for row in rows if row.phases]
    if not timed:
        return []
    names = [name for name in PHASES if any(name in row.phases for row in timed)]
    totals = dict.fromkeys(names, 0.0)
    body = []
    for row in timed:
        for name in names:
            totals[name] += row.phases.get(name, 0.0)
        other = sum(v for k, v in row.phases.items() if k not in TRAINING_PHASES)
        body.append(
            (row.case, row.dtype, *(_seconds(row.phases.get(n, math.nan)) for n in names), _seconds(other))
        )
    other_total = sum(v for k, v in totals.items() if k not in TRAINING_PHASES)
    body.append(("total", "", *(f"{totals[n]:.2f}" for n in names), f"{other_total:.2f}"))
    headers = ("case", "dtype", *names, "other")
    right = tuple(range(2, len(headers)))
    return [
        *tables.format_table(headers, body, right_aligned=right, rule=True),
        "seconds per phase of each run; other: every phase but build, trace and train (docs/speed.md)",
    ]


def format_stories(rows: Iterable[SummaryRow]) -> list[str]:
    """The stories of the runs that trained, in the table's order (a row whose training raised has
    none), a blank line between two."""
    lines: list[str] = []
    for row in rows:
        if row.story:
            lines.extend([""] * bool(lines) + row.story.splitlines())
    return lines


def _loss(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _rate(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.0f}"


def _seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"
