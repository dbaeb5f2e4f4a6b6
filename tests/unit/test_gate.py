"""The upgrade gate on synthetic results: one test (at least) per rule, the rendering and the CLI.

No TensorFlow: every :class:`RunRecord` is built by hand with :func:`record`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from pytest_convergence.cli import main
from pytest_convergence.gate import results
from pytest_convergence.gate.results import Results, RunRecord
from pytest_convergence.gate.verdict import Thresholds, compare_results
from pytest_convergence.gate.verdict_data import ADDED, FAIL, PASS, REMOVED, RENAMED, SLOWER, Verdict
from pytest_convergence.gate.verdict_text import format_table, markdown
from pytest_convergence.tolerance import DEFAULT_RTOL, Tolerance

OLD_VERSIONS = {"tensorflow": "2.15.1", "keras": "2.15.0", "python": "3.11.9"}
NEW_VERSIONS = {"tensorflow": "2.16.2", "keras": "3.4.1", "python": "3.11.9"}
MACHINE = {"node": "ci-runner-1", "machine": "x86_64", "processor": "x86_64", "cpus": 16}
OTHER_MACHINE = {"node": "laptop", "machine": "arm64", "processor": "arm", "cpus": 8}
STEPS = [10 * (i + 1) for i in range(10)]
LOSSES = [0.7 / (i + 1) for i in range(10)]


def record(case: str = "seed", dtype: str = "float32", **changes: Any) -> RunRecord:
    """A plausible run that converged and met its expectation; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "case": case,
        "dtype": dtype,
        "engine": "loop",
        "test": f"tests/test_models.py::test_{case}[{dtype}]",
        "status": "passed",
        "outcome": "descending",
        "evidence": {"drop": 0.9},
        "final_loss": LOSSES[-1],
        "steps": STEPS[-1],
        "target_loss": 0.1,
        "steps_to_target": 70,
        "converged": True,
        "expectation_met": True,
        "expectation_problems": [],
        "checkpoint_steps": list(STEPS),
        "checkpoint_losses": list(LOSSES),
        "steps_per_second": 100.0,
        "wall_times": [1.0, 1.0, 1.0],
        "cpu_times": [1.0, 1.0, 1.0],
        "loss_dtype": "float32",
        "variable_dtype": "float32",
        "versions": dict(OLD_VERSIONS),
        "tolerance": "",
    }
    fields.update(changes)
    return RunRecord(**fields)


def new_record(case: str = "seed", dtype: str = "float32", **changes: Any) -> RunRecord:
    return record(case, dtype, **{"versions": dict(NEW_VERSIONS), **changes})


def gate(
    old: RunRecord | list[RunRecord],
    new: RunRecord | list[RunRecord],
    *,
    old_machine: dict[str, Any] | None = None,
    new_machine: dict[str, Any] | None = None,
    thresholds: Thresholds | None = None,
) -> Verdict:
    before = old if isinstance(old, list) else [old]
    after = new if isinstance(new, list) else [new]
    return compare_results(
        Results(runs=before, machine=old_machine or dict(MACHINE), created="old"),
        Results(runs=after, machine=new_machine or dict(MACHINE), created="new"),
        thresholds or Thresholds(),
    )


def only_row(verdict: Verdict):
    assert len(verdict.rows) == 1, verdict.rows
    return verdict.rows[0]


def scaled(losses: list[float], factor: float, at: list[int]) -> list[float]:
    return [value * factor if index in at else value for index, value in enumerate(losses)]


# ------------------------------------------------------------------------------ identical runs
def test_identical_runs_pass_without_reasons_or_warnings() -> None:
    verdict = gate(record(), new_record())
    row = only_row(verdict)
    assert verdict.passed
    assert row.verdict == PASS
    assert row.reasons == []
    assert row.parting_step is None
    assert row.speed_ratio == pytest.approx(1.0)
    assert verdict.warnings == []


# ------------------------------------------------------------------------------ expectations
def test_expectation_that_held_and_now_fails_names_the_problem() -> None:
    problem = "expected outcome reached-zero, got stalled"
    verdict = gate(record(), new_record(expectation_met=False, expectation_problems=[problem]))
    row = only_row(verdict)
    assert not verdict.passed
    assert row.verdict == FAIL
    assert any(r.startswith("expectation broken") and problem in r for r in row.reasons), row.reasons


def test_expectation_that_already_failed_is_not_a_regression() -> None:
    old = record(expectation_met=False, expectation_problems=["stalled"])
    new = new_record(expectation_met=False, expectation_problems=["stalled"])
    assert gate(old, new).passed


def test_case_without_expectation_is_not_judged_on_it() -> None:
    assert gate(record(expectation_met=None), new_record(expectation_met=None)).passed


# ------------------------------------------------------------------------------ outcome
def test_changed_outcome_fails() -> None:
    row = only_row(gate(record(outcome="descending"), new_record(outcome="plateau")))
    assert row.verdict == FAIL
    assert "outcome descending -> plateau" in row.reasons


# ------------------------------------------------------------------------------ history
def test_history_outside_the_record_tolerance_names_the_step_and_count() -> None:
    tolerance = Tolerance(rtol=0.01, miss_fraction=0.0).to_text()
    losses = scaled(LOSSES, 1.05, at=[3, 7])  # 5% off at steps 40 and 80
    row = only_row(
        gate(record(tolerance=tolerance), new_record(checkpoint_losses=losses, tolerance=tolerance))
    )
    assert row.verdict == FAIL
    assert row.parting_step == 40
    history = [r for r in row.reasons if r.startswith("history")]
    assert history == ["history outside rtol 0.01 from step 40 (2 of 10 checkpoints)"]


def test_history_within_the_record_tolerance_passes() -> None:
    tolerance = Tolerance(rtol=0.1, miss_fraction=0.0).to_text()
    losses = scaled(LOSSES, 1.05, at=[3, 7])  # 5% off: noise under rtol 0.1
    row = only_row(
        gate(record(tolerance=tolerance), new_record(checkpoint_losses=losses, tolerance=tolerance))
    )
    assert row.verdict == PASS, row.reasons
    assert row.parting_step == 40  # the histories part, within the tolerance


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_without_tolerance_text_the_dtype_default_applies(dtype: str) -> None:
    rtol = DEFAULT_RTOL[dtype]
    inside = scaled(LOSSES, 1 + rtol / 2, at=[4])
    outside = scaled(LOSSES, 1 + rtol * 3, at=[4, 5])
    assert (
        only_row(gate(record(dtype=dtype), new_record(dtype=dtype, checkpoint_losses=inside))).verdict == PASS
    )
    row = only_row(gate(record(dtype=dtype), new_record(dtype=dtype, checkpoint_losses=outside)))
    assert row.verdict == FAIL
    assert f"history outside rtol {rtol:g} from step 50 (2 of 10 checkpoints)" in row.reasons


def test_tolerance_text_overrides_the_dtype_default() -> None:
    """A float32 history 5% off fails at the float32 default, passes under the record's rtol 0.1."""
    losses = scaled(LOSSES, 1.05, at=[2, 3, 4])
    assert only_row(gate(record(), new_record(checkpoint_losses=losses))).verdict == FAIL
    loose = Tolerance(rtol=0.1).to_text()
    assert only_row(gate(record(), new_record(checkpoint_losses=losses, tolerance=loose))).verdict == PASS


def test_allowed_share_of_missed_checkpoints() -> None:
    tolerance = Tolerance(rtol=1e-4, miss_fraction=0.2).to_text()  # 2 of 10 may miss
    two = scaled(LOSSES, 1.5, at=[1, 6])
    three = scaled(LOSSES, 1.5, at=[1, 6, 8])
    passed = only_row(gate(record(), new_record(checkpoint_losses=two, tolerance=tolerance)))
    assert passed.verdict == PASS, passed.reasons
    failed = only_row(gate(record(), new_record(checkpoint_losses=three, tolerance=tolerance)))
    assert failed.verdict == FAIL
    assert "history outside rtol 0.0001 from step 20 (3 of 10 checkpoints)" in failed.reasons


def test_history_compared_on_common_checkpoints_only() -> None:
    """A longer new run adds checkpoints; the shared ones are what is compared."""
    new = new_record(checkpoint_steps=[*STEPS, 110, 120], checkpoint_losses=[*LOSSES, 0.05, 0.04])
    assert only_row(gate(record(), new)).verdict == PASS


def test_nan_history_on_both_sides_matches() -> None:
    losses = [*LOSSES[:5], math.nan, math.nan, math.nan, math.nan, math.nan]
    old = record(outcome="diverged", checkpoint_losses=losses, final_loss=math.nan, steps_to_target=None)
    new = new_record(
        outcome="diverged", checkpoint_losses=list(losses), final_loss=math.nan, steps_to_target=None
    )
    row = only_row(gate(old, new))
    assert row.verdict == PASS, row.reasons


# ------------------------------------------------------------------------------ final loss
def test_final_loss_worse_beyond_the_threshold_fails() -> None:
    old = record(final_loss=0.1)
    row = only_row(gate(old, new_record(final_loss=0.115)))  # 15% worse, threshold 10%
    assert row.verdict == FAIL
    assert "final loss 0.1 -> 0.115" in row.reasons


def test_final_loss_worse_within_the_threshold_or_better_passes() -> None:
    assert only_row(gate(record(final_loss=0.1), new_record(final_loss=0.105))).verdict == PASS
    assert only_row(gate(record(final_loss=0.1), new_record(final_loss=0.01))).verdict == PASS


def test_final_loss_threshold_is_configurable() -> None:
    old, new = record(final_loss=0.1), new_record(final_loss=0.115)
    assert only_row(gate(old, new, thresholds=Thresholds(final_loss=0.2))).verdict == PASS


def test_nan_final_loss_fails() -> None:
    row = only_row(gate(record(final_loss=0.1), new_record(final_loss=math.nan)))
    assert row.verdict == FAIL
    assert "final loss 0.1 -> nan" in row.reasons


def test_final_loss_recovering_from_nan_is_not_a_regression() -> None:
    row = only_row(gate(record(final_loss=math.nan), new_record(final_loss=0.1)))
    assert not any(r.startswith("final loss") for r in row.reasons)


def test_negative_final_loss_slightly_worse_passes() -> None:
    row = only_row(gate(record(final_loss=-0.9), new_record(final_loss=-0.891)))  # 1% worse
    assert not any(r.startswith("final loss") for r in row.reasons), row.reasons


def test_negative_final_loss_much_worse_fails() -> None:
    row = only_row(gate(record(final_loss=-0.9), new_record(final_loss=-0.5)))
    assert any(r.startswith("final loss") for r in row.reasons)


# ------------------------------------------------------------------------------ steps to target
def test_steps_to_target_worse_beyond_the_threshold_fails() -> None:
    row = only_row(gate(record(steps_to_target=100), new_record(steps_to_target=120)))
    assert row.verdict == FAIL
    assert "steps to target 100 -> 120" in row.reasons


def test_steps_to_target_within_the_threshold_or_better_passes() -> None:
    assert only_row(gate(record(steps_to_target=100), new_record(steps_to_target=110))).verdict == PASS
    assert only_row(gate(record(steps_to_target=100), new_record(steps_to_target=50))).verdict == PASS


def test_target_never_reached_fails() -> None:
    row = only_row(gate(record(steps_to_target=100), new_record(steps_to_target=None, converged=False)))
    assert row.verdict == FAIL
    assert "steps to target 100 -> never" in row.reasons


def test_target_reached_now_but_not_before_passes() -> None:
    row = only_row(gate(record(steps_to_target=None, converged=False), new_record(steps_to_target=90)))
    assert row.verdict == PASS, row.reasons


# ------------------------------------------------------------------------------ speed
def test_slowdown_beyond_the_spread_is_a_speed_warning_not_a_failure() -> None:
    old = record(steps=1000, cpu_times=[1.0, 1.02, 1.01])
    new = new_record(steps=1000, cpu_times=[1.5, 1.52, 1.51])  # 1.5x the CPU time, spread 0.04 s
    verdict = gate(old, new)
    row = only_row(verdict)
    assert row.verdict == SLOWER
    assert verdict.passed  # a warning by default
    assert row.speed_ratio == pytest.approx(1.01 / 1.51)
    assert row.reasons == [
        "speed: 1.50x the CPU time per step (1.01 ms -> 1.51 ms, beyond the timings' spread of 40 µs)"
    ]
    table = "\n".join(format_table(verdict))
    assert "SLOWER (speed only, a warning): seed [float32]" in table
    assert "verdict: PASS (0 of 1 failed, 1 slower (speed warnings))" in table
    text = markdown(verdict)
    assert "⚠️ slower (speed)" in text and "### Speed (warnings, not failures)" in text
    assert "### Why" not in text  # no numerical reason to list


@pytest.mark.parametrize(("rule", "verdict"), [("fail", FAIL), ("off", PASS), ("warn", SLOWER)])
def test_the_speed_rule_decides_what_a_slowdown_does(rule: str, verdict: str) -> None:
    old, new = record(cpu_times=[1.0, 1.0, 1.0]), new_record(cpu_times=[2.0, 2.0, 2.0])
    assert only_row(gate(old, new, thresholds=Thresholds(speed=rule))).verdict == verdict


def test_a_slowdown_within_the_timings_spread_is_not_judged_slower() -> None:
    # medians 1.1 -> 1.6 s (1.45x) but the timings spread over 0.6 + 0.2 s: load, not the code
    old, new = record(cpu_times=[1.0, 1.1, 1.6]), new_record(cpu_times=[1.5, 1.6, 1.7])
    assert only_row(gate(old, new)).verdict == PASS


def test_slowdown_within_the_threshold_passes() -> None:
    row = only_row(gate(record(cpu_times=[1.0] * 3), new_record(cpu_times=[1.2] * 3)))
    assert row.verdict == PASS, row.reasons
    assert row.speed_ratio == pytest.approx(1 / 1.2)


def test_a_numerical_failure_is_not_hidden_by_a_speed_warning() -> None:
    new = new_record(cpu_times=[3.0] * 3, outcome="stalled")
    row = only_row(gate(record(), new))
    assert row.verdict == FAIL
    assert row.reasons == ["outcome descending -> stalled"]


def test_slowdown_on_different_machines_is_not_compared() -> None:
    verdict = gate(record(), new_record(cpu_times=[3.0] * 3), new_machine=dict(OTHER_MACHINE))
    row = only_row(verdict)
    assert row.verdict == PASS
    assert row.speed_note == "not compared: other machine"
    assert "not compared" in "\n".join(format_table(verdict))


@pytest.mark.parametrize(("old_time", "new_time"), [(0.1, 0.4), (0.4, 1.6)])
def test_slowdown_of_runs_too_short_to_time_is_not_compared(old_time: float, new_time: float) -> None:
    """Both runs must take at least ``min_time`` of CPU; here the old one (or both) is too short."""
    row = only_row(gate(record(cpu_times=[old_time] * 3), new_record(cpu_times=[new_time] * 3)))
    assert row.verdict == PASS, row.reasons
    assert row.speed_note.startswith("not compared: runs under 0.5 s")


def test_min_time_threshold_is_configurable() -> None:
    old, new = record(cpu_times=[0.1] * 3), new_record(cpu_times=[0.4] * 3)
    assert only_row(gate(old, new, thresholds=Thresholds(min_time=0.05))).verdict == SLOWER


def test_fewer_than_three_timings_a_side_show_the_ratio_but_judge_nothing() -> None:
    row = only_row(gate(record(cpu_times=[1.0]), new_record(cpu_times=[3.0])))
    assert row.verdict == PASS
    assert row.speed_ratio == pytest.approx(1 / 3)
    assert "--convergence-repeat=3" in row.speed_note


def test_speed_up_passes() -> None:
    row = only_row(gate(record(cpu_times=[2.0] * 3), new_record(cpu_times=[1.0] * 3)))
    assert row.verdict == PASS, row.reasons
    assert row.speed_ratio == pytest.approx(2.0)


def test_slowdown_threshold_is_configurable() -> None:
    old, new = record(cpu_times=[1.0] * 3), new_record(cpu_times=[1.5] * 3)
    assert only_row(gate(old, new, thresholds=Thresholds(slowdown=0.6))).verdict == PASS


def test_merged_results_of_different_machines_are_not_the_same_machine() -> None:
    first, second = {**MACHINE, "node": "ci-1"}, {**MACHINE, "node": "ci-2"}
    third, fourth = dict(OTHER_MACHINE), {**OTHER_MACHINE, "node": "laptop-2"}
    old = results.merge(
        [Results([record("a", wall_times=[1.0])], machine=first), Results([record("b")], machine=second)]
    )
    new = results.merge(
        [
            Results([new_record("a", wall_times=[3.0])], machine=third),
            Results([new_record("b")], machine=fourth),
        ]
    )
    verdict = compare_results(old, new)
    assert verdict.passed, format_table(verdict)
    assert any("different machines" in w for w in verdict.warnings)


# ------------------------------------------------------------------------------ added, removed, renamed
def test_added_and_removed_cases_are_reported_and_do_not_fail() -> None:
    old = [record("kept"), record("gone", checkpoint_losses=[v * 2 for v in LOSSES])]
    new = [new_record("kept"), new_record("fresh", checkpoint_losses=[v * 3 for v in LOSSES])]
    verdict = gate(old, new)
    assert verdict.passed
    by_case = {row.case: row for row in verdict.rows}
    assert by_case["kept"].verdict == PASS
    assert by_case["gone"].verdict == REMOVED
    assert by_case["gone"].reasons == ["only in the old results"]
    assert by_case["gone"].new is None
    assert by_case["fresh"].verdict == ADDED
    assert by_case["fresh"].reasons == ["only in the new results"]
    assert by_case["fresh"].old is None


def test_same_case_in_another_dtype_is_added_not_matched() -> None:
    verdict = gate(record("seed", "float32"), [new_record("seed", "float32"), new_record("seed", "float64")])
    assert verdict.passed
    assert sorted((row.dtype, row.verdict) for row in verdict.rows) == [("float32", PASS), ("float64", ADDED)]


def test_renamed_case_with_identical_history_is_reported_and_does_not_fail() -> None:
    verdict = gate(record("old_name"), new_record("new_name"))
    row = only_row(verdict)
    assert verdict.passed
    assert row.verdict == RENAMED
    assert row.case == "new_name"
    assert row.reasons == ["renamed from old_name (same history)"]
    assert row.old is not None and row.old.case == "old_name"


def test_same_history_in_another_dtype_is_not_a_rename() -> None:
    verdict = gate(record("a", "float32"), new_record("b", "float64"))
    assert sorted(row.verdict for row in verdict.rows) == sorted([ADDED, REMOVED])


def test_renamed_case_with_nan_history_through_results_files(tmp_path: Path) -> None:
    """Loaded from JSON (the CLI path), a diverged history with NaNs is still recognised."""
    losses = [*LOSSES[:5], math.nan, math.nan, math.nan, math.nan, math.nan]
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    results.write(old_path, Results([record("a", checkpoint_losses=losses)], machine=MACHINE))
    results.write(new_path, Results([new_record("b", checkpoint_losses=list(losses))], machine=MACHINE))
    verdict = compare_results(results.load(old_path), results.load(new_path))
    assert [row.verdict for row in verdict.rows] == [RENAMED]


def test_renamed_case_with_nan_history_in_memory() -> None:
    old = record("a", checkpoint_losses=[*LOSSES[:5], *[float("nan") for _ in range(5)]])
    new = new_record("b", checkpoint_losses=[*LOSSES[:5], *[float("nan") for _ in range(5)]])
    assert [row.verdict for row in gate(old, new).rows] == [RENAMED]


def test_same_losses_at_other_steps_is_not_a_rename() -> None:
    flat = [0.6931] * 10
    old = record("stalled_short", checkpoint_losses=flat, checkpoint_steps=STEPS)
    new = new_record("stalled_long", checkpoint_losses=flat, checkpoint_steps=[s * 10 for s in STEPS])
    assert sorted(row.verdict for row in gate(old, new).rows) == sorted([ADDED, REMOVED])


# ------------------------------------------------------------------------------ warnings
def test_machine_mismatch_warns_and_names_both_machines() -> None:
    verdict = gate(record(), new_record(), new_machine=dict(OTHER_MACHINE))
    assert verdict.passed
    assert verdict.warnings == [
        "the two results come from different machines (ci-runner-1, 16 cpus / laptop, 8 cpus): "
        "speed is not compared, numbers are compared within their tolerance (cpus: 16 -> 8)"
    ]


def test_engine_mismatch_warns() -> None:
    verdict = gate(record(engine="loop"), new_record(engine="xla"))
    assert verdict.passed
    assert verdict.warnings == ["seed [float32]: engine loop -> xla"]


# ------------------------------------------------------------------------------ title and rendering
def test_title_names_the_versions_and_the_keras_crossing() -> None:
    verdict = gate(record(), new_record())
    assert (
        verdict.title
        == "tensorflow 2.15.1, keras 2.15.0 -> tensorflow 2.16.2, keras 3.4.1 (Keras 2 → Keras 3)"
    )


def test_title_without_a_keras_major_crossing() -> None:
    versions = {"tensorflow": "2.17.0", "keras": "3.5.0"}
    verdict = gate(record(versions={"tensorflow": "2.16.2", "keras": "3.4.1"}), new_record(versions=versions))
    assert verdict.title == "tensorflow 2.16.2, keras 3.4.1 -> tensorflow 2.17.0, keras 3.5.0"
    assert "Keras 2 → Keras 3" not in verdict.title


def test_title_reads_the_recorded_keras_major_not_the_version_number() -> None:
    # tf_keras follows TensorFlow's numbering: version 2.21.0 is Keras 2, beside keras 3.15.1
    legacy = {"tensorflow": "2.21.0", "keras": "2.21.0", "keras_major": "2", "keras_package": "tf_keras"}
    modern = {"tensorflow": "2.21.0", "keras": "3.15.1", "keras_major": "3", "keras_package": "keras"}
    assert gate(record(versions=legacy), new_record(versions=modern)).title.endswith("(Keras 2 → Keras 3)")
    assert gate(record(versions=modern), new_record(versions=legacy)).title.endswith("(Keras 3 → Keras 2)")
    assert "Keras 2 →" not in gate(record(versions=legacy), new_record(versions=legacy)).title


def test_title_of_results_without_versions() -> None:
    assert gate(record(versions={}), new_record(versions={})).title == "unknown versions -> unknown versions"


def mixed_verdict() -> Verdict:
    old = [
        record("good"),
        record("broken", final_loss=0.1),
        record("gone", checkpoint_losses=[v * 2 for v in LOSSES]),
    ]
    new = [
        new_record("good"),
        new_record("broken", final_loss=0.5, outcome="plateau"),
        new_record("fresh", checkpoint_losses=[v * 3 for v in LOSSES]),
    ]
    return gate(old, new, new_machine=dict(OTHER_MACHINE))


def test_format_table_has_every_row_the_reasons_and_the_verdict() -> None:
    verdict = mixed_verdict()
    lines = format_table(verdict)
    text = "\n".join(lines)
    assert lines[0] == f"convergence gate: {verdict.title}"
    for case, word in (("good", PASS), ("broken", FAIL), ("gone", REMOVED), ("fresh", ADDED)):
        assert any(line.startswith(case) and line.endswith(word) for line in lines), (case, text)
    assert "FAIL: broken [float32]: outcome descending -> plateau; final loss 0.1 -> 0.5" in lines
    assert "removed: gone [float32]: only in the old results" in lines
    assert "added: fresh [float32]: only in the new results" in lines
    assert any(line.startswith("warning: the two results come from different machines") for line in lines)
    assert lines[-1] == "verdict: FAIL (1 of 4 failed)"


def test_format_table_of_a_pass() -> None:
    lines = format_table(gate([record("a"), record("b")], [new_record("a"), new_record("b")]))
    assert lines[-1] == "verdict: PASS (0 of 2 failed)"


def test_markdown_has_every_row_the_reasons_and_the_verdict() -> None:
    verdict = mixed_verdict()
    text = markdown(verdict)
    assert text.startswith("## Convergence gate: ❌ FAIL\n")
    assert f"**{verdict.title}**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4  # header and one row per case
    for case, word in (("good", "✅ pass"), ("broken", "❌ FAIL"), ("gone", REMOVED), ("fresh", ADDED)):
        assert any(row.startswith(f"| {case} |") and row.endswith(f"| {word} |") for row in rows), case
    assert "### Why" in text
    assert "- **broken [float32]** (FAIL): outcome descending -> plateau; final loss 0.1 -> 0.5" in text
    assert "- **gone [float32]** (removed): only in the old results" in text
    assert "### Warnings" in text


def test_markdown_of_a_pass() -> None:
    text = markdown(gate(record(), new_record()))
    assert text.startswith("## Convergence gate: ✅ pass\n")
    assert "| seed | float32 |" in text
    assert "### Why" not in text


# ------------------------------------------------------------------------------ CLI
def write_pair(tmp_path: Path, old: list[RunRecord], new: list[RunRecord]) -> tuple[str, str]:
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    results.write(old_path, Results(old, machine=dict(MACHINE)))
    results.write(new_path, Results(new, machine=dict(MACHINE)))
    return str(old_path), str(new_path)


def test_cli_compare_passes_and_writes_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = write_pair(tmp_path, [record()], [new_record()])
    md = tmp_path / "summary" / "gate.md"
    assert main(["compare", old, new, "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS (0 of 1 failed)" in out
    text = md.read_text(encoding="utf-8")
    assert text.startswith("## Convergence gate: ✅ pass")
    assert "(Keras 2 → Keras 3)" in text


def test_cli_compare_fails_and_writes_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = write_pair(tmp_path, [record(final_loss=0.1)], [new_record(final_loss=math.nan)])
    md = tmp_path / "gate.md"
    assert main(["compare", old, new, "--markdown", str(md)]) == 1
    assert "verdict: FAIL (1 of 1 failed)" in capsys.readouterr().out
    text = md.read_text(encoding="utf-8")
    assert text.startswith("## Convergence gate: ❌ FAIL")
    assert "final loss 0.1 -> nan" in text


def test_cli_thresholds_reach_the_gate(tmp_path: Path) -> None:
    old, new = write_pair(tmp_path, [record(final_loss=0.1)], [new_record(final_loss=0.115)])
    assert main(["compare", old, new]) == 1
    assert main(["compare", old, new, "--final-loss-threshold", "0.2"]) == 0


def test_cli_compare_plots_one_case_old_and_new_overlaid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    old, new = write_pair(tmp_path, [record()], [new_record(checkpoint_losses=scaled(LOSSES, 2.0, [5]))])
    png = tmp_path / "plots" / "seed.png"
    assert main(["compare", old, new, "--plot", "seed[float32]", str(png)]) == 1  # the history moved
    assert f"plot: {png}" in capsys.readouterr().out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 10_000


def test_cli_compare_plot_of_an_unknown_case_names_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = write_pair(tmp_path, [record()], [new_record()])
    assert main(["compare", old, new, "--plot", "sed[float32]", str(tmp_path / "x.png")]) == 2
    assert "try one of: seed[float32]" in capsys.readouterr().err


# ------------------------------------------------------------------------------ what else changed
def test_a_weight_that_moved_beyond_tolerance_fails_although_every_loss_agrees() -> None:
    # the float64 bias that moved from 1.06e-16 to -1.9e-8 while the loss stayed the same
    weights = {"dense/kernel (1, 1) values": [1.0], "dense/bias (1,) values": [1.06e-16]}
    moved = {**weights, "dense/bias (1,) values": [-1.9e-8]}
    tolerance = Tolerance(rtol=1e-6).to_text()
    old = record(dtype="float64", final_weights=weights, tolerance=tolerance)
    row = only_row(gate(old, new_record(dtype="float64", final_weights=moved, tolerance=tolerance)))
    assert row.verdict == FAIL
    assert row.reasons == ["weight dense/bias (1,) values[0] 1.06e-16 -> -1.9e-08 (beyond rtol 1e-06)"]
    # within the floor (a thousandth of the largest weight) the same move is no change
    tolerant = Tolerance(rtol=1e-4).to_text()
    same = gate(
        record(final_weights=weights, tolerance=tolerant), new_record(final_weights=moved, tolerance=tolerant)
    )
    assert only_row(same).verdict == PASS


def test_a_failed_snapshot_assertion_reaches_the_verdict_with_its_reason() -> None:
    report = [
        "seed [float32]: the loss history changed (rtol 0.0001 ...)",
        "  weight dense/bias[0]: 0.1 -> 0.2 (relative error 50.0%; 1 of 1 outside rtol)",
        "    step  snapshot  now",
    ]
    row = only_row(gate(record(), new_record(snapshot_problems=report)))
    assert row.verdict == FAIL
    assert row.reasons == [
        "snapshot: weight dense/bias[0]: 0.1 -> 0.2 (relative error 50.0%; 1 of 1 outside rtol)"
    ]


def test_a_legacy_optimizer_against_the_new_one_is_named_beside_the_case() -> None:
    legacy = 'keras.src.optimizers.legacy.adam.Adam {"learning_rate": 2.55, "name": "Adam"}'
    current = 'keras.src.optimizers.adam.Adam {"learning_rate": 2.55, "name": "adam", "use_ema": false}'
    verdict = gate(record(optimizer_ran=legacy), new_record(optimizer_ran=current))
    row = only_row(verdict)
    assert row.verdict == PASS  # same history: context, not a failure
    assert row.notes == [
        "optimizer that ran: keras.src.optimizers.legacy.adam.Adam (legacy) -> "
        "keras.src.optimizers.adam.Adam",
        "optimizer config: use_ema absent -> False",
    ]
    assert "note: seed [float32]: optimizer that ran: keras.src.optimizers.legacy.adam.Adam (legacy)" in (
        "\n".join(format_table(verdict))
    )
    assert "### What ran differently" in markdown(verdict)


def test_an_outcome_calibration_saw_flip_is_reported_unstable_not_changed() -> None:
    tolerance = Tolerance(rtol=1e-4, outcomes=("descending", "plateau")).to_text()
    row = only_row(gate(record(tolerance=tolerance), new_record(outcome="plateau", tolerance=tolerance)))
    assert row.verdict == PASS
    assert row.notes == [
        "outcome descending -> plateau: unstable "
        "(calibration saw descending and plateau under one-ulp perturbations)"
    ]
    assert only_row(gate(record(), new_record(outcome="plateau"))).verdict == FAIL


def test_a_borderline_outcome_changing_to_its_alternative_is_a_note_not_a_failure() -> None:
    margin = {"rule": "plateau", "value": -9.9e-4, "threshold": -1e-3, "alternative": "descending"}
    borderline = record(outcome="plateau", evidence={"margins": [{**margin, "borderline": True}]})
    row = only_row(gate(borderline, new_record(outcome="descending")))
    assert row.verdict == PASS
    assert row.notes[0].startswith("outcome plateau -> descending: borderline")
    clear = record(outcome="plateau", evidence={"margins": [{**margin, "value": -2e-4, "borderline": False}]})
    assert only_row(gate(clear, new_record(outcome="descending"))).verdict == FAIL


def test_machines_with_other_fingerprints_are_named_by_what_differs() -> None:
    intel = {**MACHINE, "id": "aaa", "cpu_model": "Intel Xeon", "isa": ["avx2", "avx512f"], "cpus": 2}
    amd = {**MACHINE, "id": "bbb", "cpu_model": "AMD EPYC", "isa": ["avx2"], "cpus": 2}
    verdict = gate(record(), new_record(), old_machine=intel, new_machine=amd)
    assert verdict.machine_differences == ["cpu model: Intel Xeon -> AMD EPYC", "isa: avx2 avx512f -> avx2"]
    assert "(cpu model: Intel Xeon -> AMD EPYC; isa: avx2 avx512f -> avx2)" in verdict.warnings[0]
    # the same fingerprint on two runners of one type is one machine: speed is compared
    same = gate(record(), new_record(), old_machine=intel, new_machine={**intel, "node": "runner-2"})
    assert same.warnings == [] and only_row(same).speed_note == ""


def test_a_divergence_calibration_saw_come_and_go_is_judged_before_the_first_nan_only() -> None:
    tolerance = Tolerance(rtol=1e-4, divergence_unstable=True).to_text()
    diverged = [*LOSSES[:3], *[float("nan")] * (len(LOSSES) - 3)]
    old = record(final_loss=float("nan"), checkpoint_losses=diverged, tolerance=tolerance)
    row = only_row(gate(old, new_record(tolerance=tolerance)))
    assert row.verdict == PASS, row.reasons
    assert row.notes[0].startswith("divergence unstable")
    # without the calibration's word, a NaN against a number is a change
    plain = record(final_loss=float("nan"), checkpoint_losses=diverged)
    assert only_row(gate(plain, new_record())).verdict == FAIL
    # and a history that parts before the NaN still fails
    early = [LOSSES[0] * 2, *LOSSES[1:]]
    assert only_row(gate(old, new_record(tolerance=tolerance, checkpoint_losses=early))).verdict == FAIL
