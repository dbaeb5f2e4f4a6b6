"""The upgrade gate: two results files (old framework, new framework) -> one verdict.

Per case and dtype the new run fails the gate when an expectation that held now fails, the outcome
changed, the loss history left its tolerance, the final loss or the steps to the target got worse
by more than a threshold, or training got slower by more than a threshold (the fastest of repeated
timings, compared as a ratio; only between runs on the same machine). Cases present on one side
only are reported as added, removed or (same history, other name) renamed, never a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import tables
from ..snapshot.compare import allowed_misses, relative_error
from ..tolerance import DEFAULT_RTOL, Tolerance
from .results import Results, RunRecord

PASS, FAIL, ADDED, REMOVED, RENAMED = "pass", "FAIL", "added", "removed", "renamed"


@dataclass(frozen=True)
class Thresholds:
    """How much worse is too much: relative changes, e.g. 0.10 is 10%."""

    final_loss: float = 0.10
    steps_to_target: float = 0.10
    slowdown: float = 0.25
    min_time: float = 0.5
    """Runs shorter than this (fastest timing, seconds) are too short to time: speed is not judged."""


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


@dataclass
class Verdict:
    rows: list[Row]
    warnings: list[str]
    old_versions: dict[str, str]
    new_versions: dict[str, str]

    @property
    def passed(self) -> bool:
        return all(row.verdict != FAIL for row in self.rows)

    @property
    def title(self) -> str:
        old = describe_versions(self.old_versions)
        new = describe_versions(self.new_versions)
        crossing = _keras_crossing(self.old_versions, self.new_versions)
        return f"{old} -> {new}{crossing}"


def compare_results(old: Results, new: Results, thresholds: Thresholds = Thresholds()) -> Verdict:
    warnings: list[str] = []
    same_machine = _machine_key(old.machine) == _machine_key(new.machine)
    if not same_machine:
        warnings.append(
            "the two results come from different machines "
            f"({_machine_name(old.machine)} / {_machine_name(new.machine)}): speed is not compared"
        )
    before, after = old.by_key(), new.by_key()
    rows: list[Row] = []
    for key in sorted(set(before) & set(after)):
        rows.append(_compare_pair(before[key], after[key], thresholds, same_machine, warnings))
    rows += _unmatched(before, after)
    return Verdict(rows=rows, warnings=warnings, old_versions=old.versions, new_versions=new.versions)


def _compare_pair(
    old: RunRecord, new: RunRecord, thresholds: Thresholds, same_machine: bool, warnings: list[str]
) -> Row:
    row = Row(old.case, old.dtype, PASS, old=old, new=new)
    if old.engine != new.engine:
        warnings.append(f"{old.case} [{old.dtype}]: engine {old.engine} -> {new.engine}")
    if old.expectation_met and new.expectation_met is False:
        row.reasons.append("expectation broken: " + "; ".join(new.expectation_problems))
    if old.outcome != new.outcome:
        row.reasons.append(f"outcome {old.outcome} -> {new.outcome}")
    row.parting_step, history = _history(old, new, thresholds)
    if history:
        row.reasons.append(history)
    if _worse(old.final_loss, new.final_loss, thresholds.final_loss):
        row.reasons.append(f"final loss {old.final_loss:.4g} -> {new.final_loss:.4g}")
    if old.steps_to_target is not None and (
        new.steps_to_target is None
        or new.steps_to_target > old.steps_to_target * (1 + thresholds.steps_to_target)
    ):
        reached = "never" if new.steps_to_target is None else str(new.steps_to_target)
        row.reasons.append(f"steps to target {old.steps_to_target} -> {reached}")
    old_speed, new_speed = old.best_steps_per_second, new.best_steps_per_second
    if old_speed > 0 and new_speed > 0:
        row.speed_ratio = new_speed / old_speed
        timed = min(old.best_wall_time, new.best_wall_time) >= thresholds.min_time
        if same_machine and timed and row.speed_ratio < 1 / (1 + thresholds.slowdown):
            row.reasons.append(
                f"{1 / row.speed_ratio:.2f}x slower ({old_speed:,.0f} -> {new_speed:,.0f} steps/s)"
            )
    if row.reasons:
        row.verdict = FAIL
    return row


def _history(old: RunRecord, new: RunRecord, thresholds: Thresholds) -> tuple[int | None, str | None]:
    """Where the checkpointed histories part, and whether beyond the tolerance of the dtype."""
    tolerance = (
        Tolerance.from_text(new.tolerance) if new.tolerance else Tolerance(rtol=DEFAULT_RTOL[new.dtype])
    )
    common, old_index, new_index = np.intersect1d(
        np.asarray(old.checkpoint_steps), np.asarray(new.checkpoint_steps), return_indices=True
    )
    if not common.size:
        return None, "no checkpoint in common"
    errors = relative_error(
        np.asarray(old.checkpoint_losses, np.float64)[old_index],
        np.asarray(new.checkpoint_losses, np.float64)[new_index],
    )
    parted = np.flatnonzero(errors > 0)
    parting = int(common[parted[0]]) if parted.size else None
    missed = errors > tolerance.rtol
    allowed = allowed_misses(tolerance.miss_fraction, common.size)
    if missed.sum() > allowed:
        first = int(np.argmax(missed))
        return parting, (
            f"history outside rtol {tolerance.rtol:g} from step {int(common[first])} "
            f"({int(missed.sum())} of {common.size} checkpoints)"
        )
    return parting, None


def _worse(old: float, new: float, threshold: float) -> bool:
    if math.isnan(new) and not math.isnan(old):
        return True
    if math.isnan(old) or math.isnan(new):
        return False
    return new - old > threshold * abs(old)  # also right for losses below zero (cosine similarity)


def _same_history(first: list[float], second: list[float]) -> bool:
    return len(first) == len(second) and bool(
        np.array_equal(np.asarray(first, np.float64), np.asarray(second, np.float64), equal_nan=True)
    )


def _unmatched(
    before: dict[tuple[str, str], RunRecord], after: dict[tuple[str, str], RunRecord]
) -> list[Row]:
    removed = {k: v for k, v in before.items() if k not in after}
    added = {k: v for k, v in after.items() if k not in before}
    rows: list[Row] = []
    for _key, old in sorted(removed.items()):
        twin = next(
            (
                k
                for k, new in added.items()
                if new.dtype == old.dtype
                and new.checkpoint_steps == old.checkpoint_steps
                and _same_history(new.checkpoint_losses, old.checkpoint_losses)
            ),
            None,
        )
        if twin is not None:
            new = added.pop(twin)
            rows.append(
                Row(new.case, new.dtype, RENAMED, [f"renamed from {old.case} (same history)"], old, new)
            )
        else:
            rows.append(Row(old.case, old.dtype, REMOVED, ["only in the old results"], old=old))
    for _, new in sorted(added.items()):
        rows.append(Row(new.case, new.dtype, ADDED, ["only in the new results"], new=new))
    return rows


# ------------------------------------------------------------------------------ rendering
HEADERS = ("case", "dtype", "outcome old -> new", "final loss old -> new", "parts at", "speed", "verdict")


def _cells(row: Row) -> tuple[str, ...]:
    outcome = f"{_get(row.old, 'outcome')} -> {_get(row.new, 'outcome')}"
    loss = f"{_loss(row.old)} -> {_loss(row.new)}"
    parting = "-" if row.parting_step is None else str(row.parting_step)
    speed = "-" if row.speed_ratio is None else f"{row.speed_ratio:.2f}x"
    return (row.case, row.dtype, outcome, loss, parting, speed, row.verdict)


def format_table(verdict: Verdict) -> list[str]:
    lines = [f"convergence gate: {verdict.title}"]
    lines += tables.format_table(HEADERS, [_cells(r) for r in verdict.rows])
    for row in verdict.rows:
        if row.verdict != PASS:
            lines.append(f"{row.verdict}: {row.case} [{row.dtype}]: {'; '.join(row.reasons)}")
    lines += [f"warning: {w}" for w in verdict.warnings]
    failed = sum(r.verdict == FAIL for r in verdict.rows)
    lines.append(f"verdict: {'PASS' if verdict.passed else 'FAIL'} ({failed} of {len(verdict.rows)} failed)")
    return lines


def markdown(verdict: Verdict) -> str:
    """A summary fit for a CI job summary or a pull-request comment."""
    mark = "✅ pass" if verdict.passed else "❌ FAIL"
    lines = [f"## Convergence gate: {mark}", "", f"**{verdict.title}**", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    for row in verdict.rows:
        cells = list(_cells(row))
        cells[-1] = {"FAIL": "❌ FAIL", "pass": "✅ pass"}.get(row.verdict, row.verdict)
        lines.append("| " + " | ".join(cells) + " |")
    reasons = [
        f"- **{r.case} [{r.dtype}]** ({r.verdict}): {'; '.join(r.reasons)}" for r in verdict.rows if r.reasons
    ]
    if reasons:
        lines += ["", "### Why", "", *reasons]
    if verdict.warnings:
        lines += ["", "### Warnings", "", *[f"- {w}" for w in verdict.warnings]]
    return "\n".join(lines) + "\n"


def _get(record: RunRecord | None, name: str) -> str:
    return "-" if record is None else str(getattr(record, name))


def _loss(record: RunRecord | None) -> str:
    return "-" if record is None else f"{record.final_loss:.4g}"


def describe_versions(versions: dict[str, str]) -> str:
    keys = [k for k in ("tensorflow", "keras") if k in versions]
    return ", ".join(f"{k} {versions[k]}" for k in keys) or "unknown versions"


def keras_major(versions: dict[str, str]) -> str:
    """2 or 3: recorded since runs could be either; older results only have the version."""
    return versions.get("keras_major") or versions.get("keras", "")[:1]


def _keras_crossing(old: dict[str, str], new: dict[str, str]) -> str:
    before, after = keras_major(old), keras_major(new)
    if before and after and before != after:
        return f" (Keras {before} → Keras {after})"
    return ""


def _machine_key(machine: dict[str, object]) -> tuple[object, ...]:
    merged = machine.get("merged")
    if isinstance(merged, list):  # a merged file of several machines is no one machine
        return ("merged", *sorted(str(_machine_key(m)) for m in merged if isinstance(m, dict)))
    return (machine.get("node"), machine.get("processor"), machine.get("cpus"))


def _machine_name(machine: dict[str, object]) -> str:
    return f"{machine.get('node', '?')}, {machine.get('cpus', '?')} cpus"
