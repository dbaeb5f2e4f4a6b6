"""The verdict as data: one row per case and dtype, the words a row's verdict is one of, and the
versions the two sides ran. Computed by :mod:`.verdict`, read by the rendering (:mod:`.verdict_text`,
:mod:`.report`, :mod:`.plot`) and by the replays' evidence (:mod:`.replay_evidence`); knows nothing
of either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .mechanism import Mechanism, group
from .results import RunRecord

PASS, FAIL, SLOWER, ADDED, REMOVED, RENAMED = "pass", "FAIL", "slower", "added", "removed", "renamed"
HEAVIER = "heavier"
"""A run that passed but whose training took more memory (:mod:`.memory`): a warning, as ``slower``."""


@dataclass
class Row:
    case: str
    dtype: str
    verdict: str
    reasons: list[str] = field(default_factory=list)
    old: RunRecord | None = None
    new: RunRecord | None = None
    parting_step: int | None = None
    speed_ratio: float | None = None
    speed_note: str = ""
    """Why speed was not compared ("runs too short to time"...), or empty."""
    notes: list[str] = field(default_factory=list)
    """What ran differently (optimizer or loss class and config): context, not a failure."""
    mechanism: Mechanism | None = None
    """Why it changed (:mod:`.mechanism`), for every case whose history or weights differ."""
    memory_warning: str = ""
    """Where its training took more memory than the old (:mod:`.memory`): a warning of its own
    kind, shown whatever the verdict; empty where it did not (or ``--memory fail`` made it a reason)."""
    memory_note: str = ""
    """Why memory was not compared ("other machine", "no peak memory recorded"), or empty."""

    @property
    def label(self) -> str:
        return f"{self.case} [{self.dtype}]"


@dataclass
class Verdict:
    rows: list[Row]
    warnings: list[str]
    old_versions: dict[str, str]
    new_versions: dict[str, str]

    machine_differences: list[str] = field(default_factory=list)
    """How the two machines' fingerprints differ (empty: the same machine)."""
    tf32: str = ""
    """Where the two sides' TF32 states differ, the sentence that says so, named before anything
    else (:func:`..fingerprint.tf32_difference`); empty where they do not (or cannot be known)."""

    @property
    def passed(self) -> bool:
        return all(row.verdict != FAIL for row in self.rows)

    @property
    def failed_rows(self) -> list[Row]:
        return [row for row in self.rows if row.verdict == FAIL]

    @property
    def mechanisms(self) -> list[tuple[str, str, list[str]]]:
        """(key, title, case labels) of every mechanism, the largest group first."""
        return group([(row.label, row.mechanism) for row in self.rows if row.mechanism is not None])

    @property
    def title(self) -> str:
        old = describe_versions(self.old_versions)
        new = describe_versions(self.new_versions)
        crossing = _keras_crossing(self.old_versions, self.new_versions)
        return f"{old} -> {new}{crossing}{backend_switch(self.old_versions, self.new_versions)}"


def describe_versions(versions: dict[str, str]) -> str:
    """``tensorflow 2.21.0, keras 3.15.1``; on another backend ``keras 3.15.1 on jax 0.10.2``."""
    backend = versions.get("keras_backend", "tensorflow")
    if backend != "tensorflow":
        keras = f"keras {versions['keras']} " if "keras" in versions else ""
        return f"{keras}on {backend} {versions.get(backend, '')}".strip()
    keys = [k for k in ("tensorflow", "keras") if k in versions]
    return ", ".join(f"{k} {versions[k]}" for k in keys) or "unknown versions"


def backend_switch(old: dict[str, str], new: dict[str, str]) -> str:
    """`` (backend switch: tensorflow → jax)`` where the two sides trained on other Keras backends."""
    before, after = old.get("keras_backend", "tensorflow"), new.get("keras_backend", "tensorflow")
    return f" (backend switch: {before} → {after})" if before != after else ""


def keras_major(versions: dict[str, str]) -> str:
    """2 or 3: recorded since runs could be either; older results only have the version."""
    return versions.get("keras_major") or versions.get("keras", "")[:1]


def _keras_crossing(old: dict[str, str], new: dict[str, str]) -> str:
    before, after = keras_major(old), keras_major(new)
    if before and after and before != after:
        return f" (Keras {before} → Keras {after})"
    return ""
