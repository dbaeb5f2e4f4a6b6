"""A run's whole story in words a forum user can follow: what the loss did, what each weight did,
which dtype rule caused it, and what would change it. Read from the diagnosis, so it states
nothing the diagnosis has not checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..run import Run


def tell(run: Run) -> str:
    """Several lines: a heading, then the diagnosis's paragraphs, each on its own line."""
    diagnosis = run.diagnosis
    heading = f"{run.case}[{run.dtype}] ({run.engine}, {run.steps} steps): {diagnosis.outcome.value}"
    lines = [heading]
    for title, text in diagnosis.story_parts():
        lines.append(f"  {title}: {text}")
    return "\n".join(lines)
