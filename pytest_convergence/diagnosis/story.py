"""A run's whole story in words a forum user can follow: what the loss did, what each weight did,
which dtype rule caused it, and what would change it. Read from the diagnosis, so it states
nothing the diagnosis has not checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .rules import Diagnosis, diagnose

if TYPE_CHECKING:
    from ..history import History


def tell(history: History, *, case: str, dtype: str, engine: str, diagnosis: Diagnosis | None = None) -> str:
    """Several lines: a heading, then the diagnosis's paragraphs, each on its own line.

    ``case``, ``dtype`` and ``engine`` name the run in the heading; ``diagnosis`` is the
    history's (diagnosed here when not given)."""
    if diagnosis is None:
        diagnosis = diagnose(history)
    heading = f"{case}[{dtype}] ({engine}, {history.steps} steps): {diagnosis.label}"
    lines = [heading]
    for title, text in diagnosis.story_parts():
        lines.append(f"  {title}: {text}")
    return "\n".join(lines)
