"""How far the session that wrote a results file got: the tests it planned, those it did not
finish, and the runs whose process died under them.

The plugin rewrites the results file as each test finishes, so a session that is killed midway
(a native abort inside TensorFlow, the OOM killer, Ctrl-C) still leaves every finished run on disk.
Without this record such a file would look like a whole session with fewer runs, and the gate would
take every run it lacks for one the suite no longer has ("removed", which passes). With it, the
file says which runs are missing and why, and the gate fails them. Imports no numpy: the plugin
loads it while pytest starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ResultsError

SHOWN = 5
"""Test ids named in one line before "and N more"."""


@dataclass(frozen=True)
class CrashedRun:
    """A run whose process died under it: it has no history to record, so the file names it."""

    test: str
    """The pytest node id of the test that was running."""
    case: str = ""
    """The case and dtype in training when the process died; empty when it died outside a run."""
    dtype: str = ""
    engine: str = ""
    signal: str = ""
    """How the process ended: ``SIGABRT``, ``SIGSEGV``, ``exit code 3``; empty if unknown."""
    detail: str = ""
    """What Python's faulthandler said, e.g. ``Fatal Python error: Aborted``."""

    @property
    def label(self) -> str:
        return f"{self.case} [{self.dtype}]" if self.case else self.test

    @property
    def how(self) -> str:
        return self.signal or "the process died"


@dataclass
class SessionProgress:
    """The ``session`` object of a results file (absent in files written before it existed)."""

    planned: list[str]
    """The node ids of the convergence tests the session selected, in collection order."""
    missing: list[str] = field(default_factory=list)
    """Planned tests that had not finished when the file was written (crashed ones aside)."""
    crashed: list[CrashedRun] = field(default_factory=list)
    finished: bool = False
    """The session ran to its end and wrote this file last; false in every file written while the
    session ran, so a file left by a session that died says so."""
    ended: str = ""
    """Why the session did not run to its end, or that it was still running."""

    @property
    def complete(self) -> bool:
        return self.finished and not self.missing and not self.crashed

    def problems(self) -> list[str]:
        """What a reader of the file must know, one sentence each; empty for a complete session."""
        lines = []
        if not self.finished or self.missing:
            why = self.ended or ("the session did not finish" if not self.finished else "it ended early")
            lines.append(
                f"not a whole session ({why}): {len(self.missing)} of {len(self.planned)} planned "
                f"tests have no result{_named(self.missing)}"
            )
        if self.crashed:
            named = ", ".join(f"{crash.label} ({crash.how})" for crash in self.crashed[:SHOWN])
            more = f" and {len(self.crashed) - SHOWN} more" if len(self.crashed) > SHOWN else ""
            lines.append(f"{len(self.crashed)} run(s) crashed, their process killed: {named}{more}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "ended": self.ended,
            "planned": list(self.planned),
            "missing": list(self.missing),
            "crashed": [asdict(crash) for crash in self.crashed],
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> SessionProgress:
        """Read back :meth:`to_json`; raises :class:`ResultsError` naming ``where`` if malformed."""
        if not isinstance(raw, dict):
            raise ResultsError(f"{where}: 'session' is not an object")
        planned, missing, crashed = raw.get("planned", []), raw.get("missing", []), raw.get("crashed", [])
        for name, value in (("planned", planned), ("missing", missing)):
            if not isinstance(value, list) or not all(isinstance(test, str) for test in value):
                raise ResultsError(f"{where}: session.{name} is not a list of test ids")
        known = set(CrashedRun.__dataclass_fields__)
        if not isinstance(crashed, list) or not all(
            isinstance(c, dict) and isinstance(c.get("test"), str) for c in crashed
        ):
            raise ResultsError(f"{where}: session.crashed is not a list of objects with a 'test'")
        return cls(
            planned=list(planned),
            missing=list(missing),
            crashed=[CrashedRun(**{k: str(v) for k, v in c.items() if k in known}) for c in crashed],
            finished=bool(raw.get("finished", False)),
            ended=str(raw.get("ended", "")),
        )


def progress(
    planned: Sequence[str], done: Iterable[str], crashed: Sequence[CrashedRun], *, finished: bool, ended: str
) -> SessionProgress:
    """The record of a session that planned ``planned`` and finished ``done`` so far."""
    accounted = set(done) | {crash.test for crash in crashed}
    return SessionProgress(
        planned=list(planned),
        missing=[test for test in planned if test not in accounted],
        crashed=list(crashed),
        finished=finished,
        ended=ended,
    )


def merged(parts: Sequence[SessionProgress | None]) -> SessionProgress | None:
    """One record for results merged from several files: what any of them lacks, the merge lacks.
    None when no part has a record (files written before it existed)."""
    known = [part for part in parts if part is not None]
    if not known:
        return None
    planned = list(dict.fromkeys(test for part in known for test in part.planned))
    missing = list(dict.fromkeys(test for part in known for test in part.missing))
    crashed = list(dict.fromkeys(crash for part in known for crash in part.crashed))
    ended = "; ".join(dict.fromkeys(part.ended for part in known if part.ended))
    finished = all(part.finished for part in known)
    return SessionProgress(planned, missing, crashed, finished, ended)


def _named(tests: Sequence[str]) -> str:
    if not tests:
        return ""
    more = f" and {len(tests) - SHOWN} more" if len(tests) > SHOWN else ""
    return ": " + ", ".join(tests[:SHOWN]) + more
