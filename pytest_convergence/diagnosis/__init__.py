"""The diagnosis: what a History shows and why, read from its arrays alone.

Everything here reads a run's record and nothing else: the rules that name the outcome
(``rules``), the per-weight events they cite (``weight_events``, ``cycles``), the check that every
number a sentence states is true (``fact_check``), the expectations a dtype must meet
(``expectations``) and the story a summary tells (``story``).
"""

from __future__ import annotations

from .rules import Diagnosis, diagnose

__all__ = ["Diagnosis", "diagnose"]
