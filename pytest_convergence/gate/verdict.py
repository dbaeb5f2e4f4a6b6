"""The upgrade gate: two results files (old framework, new framework) -> one verdict.

Per case and dtype the new run fails the gate when an expectation that held now fails, the outcome
changed, the loss history left its tolerance, the final loss or the steps to the target got worse
by more than a threshold, or training got slower by more than a threshold (the fastest of repeated
timings, compared as a ratio; only between runs on the same machine: each run's own, in a file
merged from shards on several machines). Cases present on one side only are reported as added,
removed or (same history, other name) renamed, never a crash; a run the new session did not finish
(its process crashed, or the session ended first: the results file's ``session`` record says
which) fails, since the gate cannot judge it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..diagnosis.margins import alternatives_in
from ..fingerprint import TF32_DTYPES, run_tf32, tf32_difference, tf32_state
from ..snapshot.compare import allowed_misses, relative_error, weight_errors, weight_floor
from ..tolerance import DEFAULT_RTOL, Tolerance
from . import memory
from .mechanism import NOT_LOCALISED, Mechanism, anatomy_of, difference_notes, explain
from .mechanism_check import MechanismFactWarning, check_mechanism, check_mechanism_words
from .results import Results, RunRecord
from .verdict_data import ADDED, FAIL, PASS, REMOVED, RENAMED, SLOWER, Row, Verdict

if TYPE_CHECKING:
    from .replay_evidence import ReplayEvidence

MIN_TIMINGS = 3
"""Timings needed on each side to know their spread; fewer, and speed is shown but not judged."""


@dataclass(frozen=True)
class Thresholds:
    """How much worse is too much: relative changes, e.g. 0.10 is 10%."""

    final_loss: float = 0.10
    steps_to_target: float = 0.10
    slowdown: float = 0.25
    min_time: float = 0.5
    """Runs shorter than this (CPU seconds) are too short to time: speed is "not compared"."""
    speed: str = "warn"
    """What a slowdown beyond the spread does: ``warn`` (a ``slower`` verdict), ``fail`` or ``off``."""
    memory_growth: float = memory.GROWTH
    """A run is heavier when its peak memory grew by more than this share (and the spread, the floor)."""
    memory_floor: float = memory.FLOOR
    """Bytes of growth too small to judge: allocator and interpreter noise."""
    memory: str = "warn"
    """What a memory growth beyond the rule does: ``warn`` (a ``heavier`` warning), ``fail`` or ``off``."""


def compare_results(
    old: Results,
    new: Results,
    thresholds: Thresholds = Thresholds(),
    replays: ReplayEvidence | None = None,
) -> Verdict:
    warnings: list[str] = []
    before, after = old.by_key(), new.by_key()
    common = sorted(set(before) & set(after))
    machines = {key: (old.machine_of(before[key]), new.machine_of(after[key])) for key in common}
    several = _several_machines(old) or _several_machines(new)
    if several:
        machine_differences = _machines_per_run(list(machines.values()), warnings)
    else:
        machine_differences = _machines_of_files(old.machine, new.machine, warnings)
    rows: list[Row] = []
    tf32 = tf32_difference(tf32_state(old.machine), tf32_state(new.machine))
    for key in common:
        old_machine, new_machine = machines[key]
        other = _other_machine(old_machine, new_machine, several)
        row = _compare_pair(before[key], after[key], thresholds, other, warnings)
        row.mechanism = _mechanism(row, replays, warnings)
        tf32 = _name_tf32(row, old_machine, new_machine) or tf32
        rows.append(row)
    rows += _unmatched(before, after)
    warnings += _unfinished(old, new, rows)
    return Verdict(
        rows=rows,
        warnings=warnings,
        old_versions=old.versions,
        new_versions=new.versions,
        machine_differences=machine_differences,
        tf32=tf32 or "",
    )


def _name_tf32(row: Row, old_machine: dict[str, Any], new_machine: dict[str, Any]) -> str | None:
    """Where the two runs' TF32 states differ, the sentence that says so; a float32 row whose
    runs differ names it first, before any other reason or note (TF32 moves every float32 matmul
    by more than float32's default rtol, so every other difference is read after it)."""
    old, new = row.old, row.new
    assert old is not None and new is not None
    sentence = tf32_difference(
        run_tf32(old.versions.get("machine", ""), old_machine),
        run_tf32(new.versions.get("machine", ""), new_machine),
    )
    if sentence is None or row.dtype not in TF32_DTYPES:
        return sentence
    if row.reasons or row.parting_step is not None or old.final_weights != new.final_weights:
        (row.reasons if row.reasons else row.notes).insert(0, sentence)
    return sentence


def _outcomes(record: RunRecord) -> set[str]:
    """The record's outcome and its borderline alternatives (the diagnosis's margins evidence)."""
    return {record.outcome, *alternatives_in(record.evidence)}


def _compare_pair(
    old: RunRecord, new: RunRecord, thresholds: Thresholds, other_machine: str, warnings: list[str]
) -> Row:
    """One case and dtype judged; ``other_machine``: why its speed is not compared for the machines
    its runs trained on (empty: one machine, :func:`_other_machine`)."""
    row = Row(old.case, old.dtype, PASS, old=old, new=new)
    if old.engine != new.engine:
        warnings.append(f"{old.case} [{old.dtype}]: engine {old.engine} -> {new.engine}")
    if old.expectation_met and new.expectation_met is False:
        row.reasons.append("expectation broken: " + "; ".join(new.expectation_problems))
    tolerance = _tolerance(new)
    if old.outcome != new.outcome:
        if {old.outcome, new.outcome} <= set(tolerance.outcomes):
            row.notes.append(
                f"outcome {old.outcome} -> {new.outcome}: unstable (calibration saw "
                f"{' and '.join(tolerance.outcomes)} {tolerance.measured_across})"
            )
        elif new.outcome in _outcomes(old) or old.outcome in _outcomes(new):
            row.notes.append(
                f"outcome {old.outcome} -> {new.outcome}: borderline (a run within another machine's "
                "move of the rule that decides between them)"
            )
        else:
            row.reasons.append(f"outcome {old.outcome} -> {new.outcome}")
    chaotic = tolerance.divergence_unstable and math.isfinite(old.final_loss) != math.isfinite(new.final_loss)
    if chaotic:
        row.notes.append(
            "divergence unstable: calibration saw this run end in NaN and finite under one-ulp "
            "perturbations; judged before the first NaN only"
        )
    row.parting_step, history = _history(old, new, tolerance)
    if history:
        row.reasons.append(history)
    if not chaotic:
        row.reasons += _weights(old, new, tolerance)
    if new.snapshot_problems and new.snapshot_problems != old.snapshot_problems:
        row.reasons.append("snapshot: " + _snapshot_reason(new.snapshot_problems))
    row.notes += _what_ran(old, new)
    row.notes += difference_notes(old, new)
    if not chaotic and _worse(old.final_loss, new.final_loss, thresholds.final_loss):
        row.reasons.append(f"final loss {old.final_loss:.4g} -> {new.final_loss:.4g}")
    if old.steps_to_target is not None and (
        new.steps_to_target is None
        or new.steps_to_target > old.steps_to_target * (1 + thresholds.steps_to_target)
    ):
        reached = "never" if new.steps_to_target is None else str(new.steps_to_target)
        row.reasons.append(f"steps to target {old.steps_to_target} -> {reached}")
    slower = _speed(old, new, thresholds, other_machine, row)
    if row.reasons:
        row.verdict = FAIL
    elif slower and thresholds.speed != "off":
        row.reasons.append(slower)
        row.verdict = FAIL if thresholds.speed == "fail" else SLOWER
    memory.judge(  # a warning kind of its own (issue 25)
        old,
        new,
        row,
        other_machine=other_machine,
        growth=thresholds.memory_growth,
        floor=thresholds.memory_floor,
        mode=thresholds.memory,
    )
    return row


def _mechanism(row: Row, replays: ReplayEvidence | None, warnings: list[str]) -> Mechanism | None:
    """Why a case whose checkpointed losses or final weights differ changed; None if they do not.
    Its words are fact-checked against the records (:mod:`.mechanism_check`): a claim that does
    not hold is said beside the sentence, in the verdict's warnings and as a Python warning."""
    old, new = row.old, row.new
    assert old is not None and new is not None
    weights_differ = old.final_weights != new.final_weights
    if row.parting_step is None and not weights_differ and old.outcome == new.outcome:
        return None
    key = (row.case, row.dtype)
    old_anatomy = replays.old_anatomies.get(key) if replays else None
    new_anatomy = replays.new_anatomies.get(key) if replays else None
    for anatomy, record in ((old_anatomy, old), (new_anatomy, new)):
        if anatomy is not None:  # a replay's first steps must be the results file's run
            anatomy.check_checkpoints(record.checkpoint_steps, [float(v) for v in record.checkpoint_losses])
    mechanism = explain(old, new, row.parting_step, old_anatomy=old_anatomy, new_anatomy=new_anatomy)
    mechanism.fact_problems += check_mechanism(
        mechanism,
        old,
        new,
        old_anatomy=old_anatomy or anatomy_of(old),
        new_anatomy=new_anatomy or anatomy_of(new),
    )
    unavailable = [
        f"the {side} side's {record.stages_unavailable}"
        for side, record, anatomy in (("old", old, old_anatomy), ("new", new, new_anatomy))
        if record.stages_unavailable and not record.anatomy and anatomy is None
    ]
    if unavailable and mechanism.key == NOT_LOCALISED and mechanism.localisation is None:
        mechanism.sentence = f"not localised: {'; '.join(unavailable)}"
    if replays is not None:
        replays.confirm(mechanism, row)
        mechanism.fact_problems += [f"the replay: {problem}" for problem in check_mechanism_words(mechanism)]
    if mechanism.fact_problems:
        problems = "; ".join(dict.fromkeys(mechanism.fact_problems))
        text = (
            f"{row.label}: the mechanism states what its records do not show (a pytest-convergence bug, "
            f"please report it): {problems}"
        )
        mechanism.sentence += " [fact check: not all of this holds, see the warnings]"
        warnings.append(text)
        import warnings as python_warnings

        python_warnings.warn(MechanismFactWarning(text), stacklevel=2)
    return mechanism


def _speed(
    old: RunRecord, new: RunRecord, thresholds: Thresholds, other_machine: str, row: Row
) -> str | None:
    """The speed judgement: the process's CPU time per step (which a busy neighbour inflates far
    less than wall time), judged only when the two medians differ by more than the spread of both
    sides' timings and by more than ``slowdown``; the reason when it got slower, else None."""
    if other_machine:
        row.speed_note = f"not compared: {other_machine}"
        return None
    if not old.cpu_times or not new.cpu_times:
        row.speed_note = "not compared: no CPU times recorded"
        return None
    old_step = np.asarray(old.cpu_times) / max(old.steps, 1)
    new_step = np.asarray(new.cpu_times) / max(new.steps, 1)
    row.speed_ratio = float(np.median(old_step) / np.median(new_step))  # above 1: faster
    if min(min(old.cpu_times), min(new.cpu_times)) < thresholds.min_time:
        row.speed_note = f"not compared: runs under {thresholds.min_time:g} s of CPU are too short to time"
        return None
    if min(len(old.cpu_times), len(new.cpu_times)) < MIN_TIMINGS:
        row.speed_note = (
            f"not judged: {MIN_TIMINGS} timings a side are needed (--convergence-repeat={MIN_TIMINGS})"
        )
        return None
    difference = float(np.median(new_step) - np.median(old_step))
    spread = float(np.ptp(old_step) + np.ptp(new_step))
    if difference > spread and row.speed_ratio < 1 / (1 + thresholds.slowdown):
        return (
            f"speed: {1 / row.speed_ratio:.2f}x the CPU time per step "
            f"({_ms(np.median(old_step))} -> {_ms(np.median(new_step))}, beyond the timings' "
            f"spread of {_ms(spread)})"
        )
    return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.3g} µs"


def _tolerance(record: RunRecord) -> Tolerance:
    if record.tolerance:
        return Tolerance.from_text(record.tolerance)
    return Tolerance(rtol=DEFAULT_RTOL.get(record.dtype, 1e-4))


def _weights(old: RunRecord, new: RunRecord, tolerance: Tolerance) -> list[str]:
    """Final weights beyond the run's tolerance, judged as the snapshot comparison judges them."""
    if not old.final_weights or not new.final_weights:
        return []
    before = {name: np.asarray(v, np.float64) for name, v in old.final_weights.items()}
    after = {name: np.asarray(v, np.float64) for name, v in new.final_weights.items()}
    every = [v for v in (*before.values(), *after.values()) if v.size]
    floor = weight_floor(np.concatenate(every) if every else np.zeros(0))
    reasons = []
    for name in sorted(set(before) & set(after)):
        if before[name].shape != after[name].shape:
            reasons.append(f"weight {name}: shape {before[name].shape} -> {after[name].shape}")
            continue
        errors = weight_errors(before[name], after[name], floor)
        worst = int(np.argmax(errors)) if errors.size else 0
        if errors.size and errors[worst] > tolerance.weights_rtol:
            reasons.append(
                f"weight {name}[{worst}] {before[name][worst]:.4g} -> {after[name][worst]:.4g} "
                f"(beyond rtol {tolerance.weights_rtol:g})"
            )
    return reasons


def _snapshot_reason(lines: list[str]) -> str:
    """The first problem of a snapshot report (its lines after the title), on one line."""
    problems = [
        line.strip()
        for line in lines[1:]
        if line.startswith("  ") and not line.startswith("    ") and "--snapshot-update" not in line
    ]
    return "; ".join(problems[:2]) or lines[0].strip()


def _what_ran(old: RunRecord, new: RunRecord) -> list[str]:
    """The optimizer and loss that ran, where the two sides differ: class (module path) or config."""
    notes = []
    for label, before, after in (
        ("optimizer", old.optimizer_ran, new.optimizer_ran),
        ("loss", old.loss_ran, new.loss_ran),
    ):
        if not before or not after or before == after:
            continue
        old_class, _, old_config = before.partition(" ")
        new_class, _, new_config = after.partition(" ")
        if old_class != new_class:
            notes.append(f"{label} that ran: {_mark_legacy(old_class)} -> {_mark_legacy(new_class)}")
        changed = _config_changes(old_config, new_config)
        if changed:
            notes.append(f"{label} config: {changed}")
    return notes


def _mark_legacy(path: str) -> str:
    return f"{path} (legacy)" if ".legacy." in path else path


def _config_changes(before: str, after: str) -> str:
    import json

    try:
        old, new = json.loads(before or "{}"), json.loads(after or "{}")
    except ValueError:
        return "" if before == after else f"{before} -> {after}"
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    keys = sorted(
        k for k in set(old) | set(new) if k != "name" and old.get(k, "absent") != new.get(k, "absent")
    )
    shown = [f"{k} {old.get(k, 'absent')} -> {new.get(k, 'absent')}" for k in keys[:4]]
    return ", ".join(shown) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")


def _history(old: RunRecord, new: RunRecord, tolerance: Tolerance) -> tuple[int | None, str | None]:
    """Where the checkpointed histories part, and whether beyond the run's tolerance."""
    common, old_index, new_index = np.intersect1d(
        np.asarray(old.checkpoint_steps), np.asarray(new.checkpoint_steps), return_indices=True
    )
    if not common.size:
        return None, "no checkpoint in common"
    before = np.asarray(old.checkpoint_losses, np.float64)[old_index]
    after = np.asarray(new.checkpoint_losses, np.float64)[new_index]
    if tolerance.divergence_unstable:  # what follows the first NaN of either side is chaotic
        keep = np.cumprod(np.isfinite(before) & np.isfinite(after)).astype(bool)
        common, before, after = common[keep], before[keep], after[keep]
        if not common.size:
            return None, None
    errors = relative_error(before, after)
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


def _unfinished(old: Results, new: Results, rows: list[Row]) -> list[str]:
    """A run of the old side that the new session did not finish is not a run the suite dropped:
    it fails, saying why (crashed, or not reached). The warnings say what either file lacks."""
    warnings = [f"the old results: {line}" for line in old.session.problems()] if old.session else []
    session = new.session
    if session is None:
        return warnings
    warnings += [f"the new results: {line}" for line in session.problems()]
    by_run = {(crash.case, crash.dtype): crash for crash in session.crashed if crash.case}
    by_test = {crash.test: crash for crash in session.crashed}
    missing = set(session.missing)
    for row in rows:
        if row.verdict != REMOVED or row.old is None:
            continue
        crash = by_run.get(row.old.key) or by_test.get(row.old.test)
        if crash is not None:
            where = f" ({crash.detail})" if crash.detail and crash.detail not in crash.how else ""
            row.verdict = FAIL
            row.reasons = [f"crashed in the new session: {crash.how}{where}, in {crash.test}"]
        elif row.old.test in missing:
            row.verdict = FAIL
            row.reasons = [f"not run: the new session ended before {row.old.test} finished"]
    return warnings


def _machines_of_files(old: dict[str, Any], new: dict[str, Any], warnings: list[str]) -> list[str]:
    """Two files of one machine each: where they differ, the warning that says speed is not
    compared, and how their fingerprints differ."""
    from ..fingerprint import differences

    if _machine_key(old) == _machine_key(new):
        return []
    machine_differences = differences(old, new)
    warnings.append(
        "the two results come from different machines "
        f"({_machine_name(old)} / {_machine_name(new)}): speed is not compared, "
        "numbers are compared within their tolerance"
        + (f" ({'; '.join(machine_differences)})" if machine_differences else "")
    )
    return machine_differences


def _machines_per_run(pairs: list[tuple[dict[str, Any], dict[str, Any]]], warnings: list[str]) -> list[str]:
    """A side merged from shards on several machines: each run is judged on the machines its two
    runs trained on. One warning per pair of machines that differ, with how many runs trained on
    it, so that a shard that moved to another runner reads as such; the differences of them all."""
    from ..fingerprint import differences

    differing: dict[tuple[str, str], list[Any]] = {}
    for old, new in pairs:
        if _machine_key(old) != _machine_key(new):
            key = (str(_machine_key(old)), str(_machine_key(new)))
            differing.setdefault(key, [old, new, 0])[2] += 1
    machine_differences: list[str] = []
    for old, new, count in differing.values():
        named = differences(old, new)
        warnings.append(
            f"the two results come from different machines for {count} of {len(pairs)} runs "
            f"({_machine_name(old)} / {_machine_name(new)}): their speed is not compared, numbers "
            "are compared within their tolerance" + (f" ({'; '.join(named)})" if named else "")
        )
        machine_differences += [line for line in named if line not in machine_differences]
    return machine_differences


def _several_machines(results: Results) -> bool:
    """Whether a file's runs trained on several machines (:func:`.results.merge`)."""
    return "merged" in results.machine or any(run.machine for run in results.runs)


def _other_machine(old: dict[str, Any], new: dict[str, Any], several: bool) -> str:
    """Why a run's speed is not compared for the machines its two runs trained on (empty: one
    machine): ``other machine``, naming both where a side holds several machines (by their
    fingerprint ids where the CPU and its count do not tell them apart: other threads or flags)."""
    if _machine_key(old) == _machine_key(new):
        return ""
    if not several:
        return "other machine"
    names = _machine_name(old), _machine_name(new)
    if names[0] == names[1] and old.get("id") and new.get("id"):
        names = f"fingerprint {old['id']}", f"fingerprint {new['id']}"
    return f"other machine ({names[0]} / {names[1]})"


def _machine_key(machine: dict[str, object]) -> tuple[object, ...]:
    merged = machine.get("merged")
    if isinstance(merged, list):  # a merged file of several machines is no one machine
        return ("merged", *sorted(str(_machine_key(m)) for m in merged if isinstance(m, dict)))
    if "id" in machine:  # a fingerprint (:mod:`..fingerprint`): CPU, ISA, threads, build, GPU
        return ("fingerprint", machine["id"])
    return (machine.get("node"), machine.get("processor"), machine.get("cpus"))  # results before it


def _machine_name(machine: dict[str, object]) -> str:
    merged = machine.get("merged")
    if isinstance(merged, list):  # a run of a file merged before runs kept their own machine
        return f"one of {len(merged)} merged machines"
    model = machine.get("cpu_model") or machine.get("node", "?")
    return f"{model}, {machine.get('cpus', '?')} cpus"
