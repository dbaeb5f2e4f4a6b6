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
from pytest_convergence.gate.verdict import (
    ADDED,
    FAIL,
    PASS,
    REMOVED,
    RENAMED,
    Thresholds,
    Verdict,
    compare_results,
    format_table,
    markdown,
)
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
def test_slowdown_beyond_the_threshold_fails_on_the_same_machine() -> None:
    old = record(steps=1000, wall_times=[1.0, 1.0, 1.0])
    new = new_record(steps=1000, wall_times=[1.5, 1.5, 1.5])  # 1.5x slower, threshold 25%
    row = only_row(gate(old, new))
    assert row.verdict == FAIL
    assert row.speed_ratio == pytest.approx(1 / 1.5)
    assert "1.50x slower (1,000 -> 667 steps/s)" in row.reasons


def test_slowdown_within_the_threshold_passes() -> None:
    row = only_row(gate(record(wall_times=[1.0]), new_record(wall_times=[1.2])))
    assert row.verdict == PASS, row.reasons
    assert row.speed_ratio == pytest.approx(1 / 1.2)


def test_slowdown_on_different_machines_is_not_judged() -> None:
    verdict = gate(record(wall_times=[1.0]), new_record(wall_times=[3.0]), new_machine=dict(OTHER_MACHINE))
    assert only_row(verdict).verdict == PASS
    assert verdict.passed


@pytest.mark.parametrize(("old_time", "new_time"), [(0.1, 0.4), (0.4, 1.6)])
def test_slowdown_of_runs_too_short_to_time_is_not_judged(old_time: float, new_time: float) -> None:
    """Both runs must take at least ``min_time``; here the old one (or both) is too short."""
    row = only_row(gate(record(wall_times=[old_time] * 3), new_record(wall_times=[new_time] * 3)))
    assert row.verdict == PASS, row.reasons
    assert row.speed_ratio == pytest.approx(old_time / new_time)


def test_min_time_threshold_is_configurable() -> None:
    old, new = record(wall_times=[0.1]), new_record(wall_times=[0.4])
    row = only_row(gate(old, new, thresholds=Thresholds(min_time=0.05)))
    assert row.verdict == FAIL


def test_slowdown_is_measured_on_the_fastest_of_the_wall_times() -> None:
    # Noise only adds time: two disturbed timings of three (median 1.5 s) are no slowdown.
    old = record(wall_times=[1.0, 1.0, 1.0], steps_per_second=1000.0)
    noisy = new_record(wall_times=[1.5, 4.0, 1.0], steps_per_second=1000.0)
    assert only_row(gate(old, noisy)).verdict == PASS
    # Slower in every timing although the single steps_per_second field says nothing changed.
    slow = new_record(wall_times=[2.0, 2.5, 2.0], steps_per_second=1000.0)
    row = only_row(gate(old, slow))
    assert row.verdict == FAIL
    assert row.speed_ratio == pytest.approx(0.5)


def test_speed_up_passes() -> None:
    row = only_row(gate(record(wall_times=[2.0, 2.0, 2.0]), new_record(wall_times=[1.0, 1.0, 1.0])))
    assert row.verdict == PASS, row.reasons
    assert row.speed_ratio == pytest.approx(2.0)


def test_slowdown_threshold_is_configurable() -> None:
    old, new = record(wall_times=[1.0]), new_record(wall_times=[1.5])
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
        "speed is not compared"
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
