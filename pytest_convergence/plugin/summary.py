"""The table printed at the end of a convergence session: one row per case and dtype."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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

    @classmethod
    def from_run(cls, run: object, status: str) -> SummaryRow:
        from ..run import Run

        assert isinstance(run, Run)
        return cls(
            case=run.case,
            dtype=run.dtype,
            engine=run.engine,
            outcome=run.outcome,
            final_loss=run.final_loss,
            steps=run.steps,
            steps_per_second=run.steps_per_second,
            converged=None if run.target_loss is None else run.converged,
            status=status,
        )


HEADERS = ("case", "dtype", "engine", "outcome", "final loss", "steps", "steps/s", "target", "test")


def format_table(rows: Iterable[SummaryRow]) -> list[str]:
    """Aligned text rows, in the order the runs happened."""
    body = [
        (
            row.case,
            row.dtype,
            row.engine,
            row.outcome,
            _loss(row.final_loss),
            f"{row.steps:,}",
            _rate(row.steps_per_second),
            {None: "-", True: "met", False: "missed"}[row.converged],
            row.status,
        )
        for row in rows
    ]
    if not body:
        return []
    return tables.format_table(HEADERS, body, right_aligned=(4, 5, 6), rule=True)


def _loss(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _rate(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:,.0f}"
