"""A suite sharded across machines (pytest-split jobs on CI runners), merged and gated: each run keeps
the machine it trained on, and the gate compares a run's speed where its old and new runs trained
on one machine. Results built synthetically, no framework (the end-to-end twin: e2e/test_shards.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_convergence.cli import main
from pytest_convergence.gate import results
from pytest_convergence.gate.results import Results, ResultsError, RunRecord
from pytest_convergence.gate.verdict import compare_results
from pytest_convergence.gate.verdict_data import PASS, SLOWER
from pytest_convergence.gate.verdict_text import format_table

VERSIONS = {"tensorflow": "2.21.0", "keras": "3.15.1", "python": "3.11.9"}
RUNNER = {"node": "ci-1", "cpu_model": "Xeon 8375C", "cpus": 4, "isa": ["avx2"], "id": "aaaaaaaaaaaa"}
TWIN = {**RUNNER, "node": "ci-2"}  # another runner of the same type: the same fingerprint id
OTHER = {"node": "ci-3", "cpu_model": "EPYC 7763", "cpus": 8, "isa": ["avx2", "fma"], "id": "bbbbbbbbbbbb"}


def record(case: str, *, cpu: float = 1.0, fingerprint: str = "", **changes: Any) -> RunRecord:
    """A run with three timings of ``cpu`` CPU seconds each (enough to judge its speed)."""
    values: dict[str, Any] = {
        "case": case,
        "dtype": "float32",
        "engine": "loop",
        "test": f"test_suite.py::test_{case}[float32]",
        "status": "passed",
        "outcome": "descending",
        "evidence": {},
        "final_loss": 0.07,
        "steps": 100,
        "target_loss": None,
        "steps_to_target": None,
        "converged": None,
        "expectation_met": None,
        "expectation_problems": [],
        "checkpoint_steps": [50, 100],
        "checkpoint_losses": [0.2, 0.07],
        "steps_per_second": 100.0,
        "wall_times": [cpu] * 3,
        "cpu_times": [cpu] * 3,
        "loss_dtype": "float32",
        "variable_dtype": "float32",
        "versions": dict(VERSIONS),
        "fingerprint": fingerprint,
    }
    values.update(changes)
    return RunRecord(**values)


def shards(cpu: float = 1.0) -> Results:
    """``a`` trained on RUNNER, ``b`` on OTHER: two pytest-split groups on two machines, merged."""
    return results.merge(
        [
            Results([record("a", cpu=cpu)], machine=dict(RUNNER)),
            Results([record("b", cpu=cpu)], machine=dict(OTHER)),
        ],
        ["group-1.json", "group-2.json"],
    )


def test_a_merge_of_two_machines_keeps_each_runs_machine_through_the_file(tmp_path: Path) -> None:
    merged = shards()
    assert merged.machine == {"merged": [RUNNER, OTHER]}
    by_key = merged.by_key()
    assert by_key[("a", "float32")].machine == RUNNER
    assert by_key[("b", "float32")].machine == OTHER

    path = tmp_path / "merged.json"
    results.write(path, merged)
    loaded = results.load(path)
    assert {run.case: loaded.machine_of(run) for run in loaded.runs} == {"a": RUNNER, "b": OTHER}
    assert loaded.to_json() == merged.to_json()


def test_a_merge_of_one_machine_writes_no_machine_per_run(tmp_path: Path) -> None:
    """Two runners of one type share a fingerprint id, yet their node names differ: a merge keeps
    both (``2 machines``), and the gate takes them for one machine."""
    one = results.merge(
        [Results([record("a")], machine=dict(RUNNER)), Results([record("b")], machine=dict(RUNNER))]
    )
    assert one.machine == RUNNER
    assert all(not run.machine for run in one.runs)
    assert all("machine" not in run for run in json.loads(one.to_json())["runs"])

    twins = results.merge(
        [Results([record("a")], machine=dict(RUNNER)), Results([record("b")], machine=dict(TWIN))]
    )
    assert twins.machine == {"merged": [RUNNER, TWIN]}
    verdict = compare_results(twins, shards_of(RUNNER, TWIN, cpu=3.0))
    assert [row.verdict for row in verdict.rows] == [SLOWER, SLOWER]  # one fingerprint: compared
    assert not any("different machines" in warning for warning in verdict.warnings)


def shards_of(first: dict[str, Any], second: dict[str, Any], cpu: float) -> Results:
    return results.merge(
        [
            Results([record("a", cpu=cpu)], machine=dict(first)),
            Results([record("b", cpu=cpu)], machine=dict(second)),
        ]
    )


def test_the_gate_compares_speed_per_run_where_both_sides_trained_on_one_machine() -> None:
    """Old: the whole suite on RUNNER. New: sharded, ``a`` on RUNNER and ``b`` on OTHER, both three
    times slower. ``a`` is judged slower; ``b``'s speed is not compared, and the verdict says why."""
    baseline = Results([record("a"), record("b")], machine=dict(RUNNER))
    verdict = compare_results(baseline, shards(cpu=3.0))
    rows = {row.case: row for row in verdict.rows}
    assert rows["a"].verdict == SLOWER and rows["a"].speed_ratio == pytest.approx(1 / 3)
    assert rows["b"].verdict == PASS
    assert rows["b"].speed_note == ("not compared: other machine (Xeon 8375C, 4 cpus / EPYC 7763, 8 cpus)")
    assert rows["b"].speed_ratio is None
    assert verdict.warnings == [
        "the two results come from different machines for 1 of 2 runs (Xeon 8375C, 4 cpus / "
        "EPYC 7763, 8 cpus): their speed is not compared, numbers are compared within their "
        "tolerance (cpu model: Xeon 8375C -> EPYC 7763; isa: avx2 -> avx2 fma; cpus: 4 -> 8)"
    ]
    assert verdict.machine_differences == [
        "cpu model: Xeon 8375C -> EPYC 7763",
        "isa: avx2 -> avx2 fma",
        "cpus: 4 -> 8",
    ]
    table = "\n".join(format_table(verdict))
    assert "warning: the two results come from different machines for 1 of 2 runs" in table


def test_two_sides_sharded_alike_compare_every_runs_speed() -> None:
    verdict = compare_results(shards(), shards(cpu=3.0))
    assert [row.verdict for row in verdict.rows] == [SLOWER, SLOWER]
    assert verdict.warnings == [] and verdict.machine_differences == []


def test_a_file_merged_before_runs_kept_their_machine_finds_them_by_fingerprint_id() -> None:
    """Such a file lists its machines (``{"merged": [...]}``) and each run its fingerprint id."""
    old_style = Results(
        [record("a", fingerprint=RUNNER["id"]), record("b", fingerprint=OTHER["id"]), record("c")],
        machine={"merged": [dict(RUNNER), dict(OTHER)]},
    )
    machines = {run.case: old_style.machine_of(run) for run in old_style.runs}
    assert machines == {"a": RUNNER, "b": OTHER, "c": old_style.machine}
    verdict = compare_results(old_style, Results([record(c, cpu=3.0) for c in "abc"], machine=dict(RUNNER)))
    rows = {row.case: row for row in verdict.rows}
    assert rows["a"].verdict == SLOWER
    assert rows["b"].speed_note.startswith("not compared: other machine (EPYC 7763, 8 cpus / Xeon")
    assert (
        rows["c"].speed_note == "not compared: other machine (one of 2 merged machines / Xeon 8375C, 4 cpus)"
    )


def test_merging_merged_files_again_keeps_every_machine_once() -> None:
    again = results.merge([shards(), Results([record("c")], machine=dict(RUNNER))])
    assert again.machine == {"merged": [RUNNER, OTHER]}
    assert {run.case: run.machine for run in again.runs} == {"a": RUNNER, "b": OTHER, "c": RUNNER}


def test_a_runs_machine_that_is_not_an_object_is_refused_on_load(tmp_path: Path) -> None:
    path = tmp_path / "merged.json"
    results.write(path, shards())
    document = json.loads(path.read_text())
    document["runs"][1]["machine"] = "ci-3"
    path.write_text(json.dumps(document))
    with pytest.raises(ResultsError, match=r"runs\[1\]\.machine is not an object; regenerate it"):
        results.load(path)


def test_the_cli_merges_shards_and_gates_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline, one, two = tmp_path / "baseline.json", tmp_path / "group-1.json", tmp_path / "group-2.json"
    results.write(baseline, Results([record("a"), record("b")], machine=dict(RUNNER)))
    results.write(one, Results([record("a")], machine=dict(RUNNER)))
    results.write(two, Results([record("b")], machine=dict(OTHER)))
    merged = tmp_path / "merged.json"
    assert main(["merge", str(merged), str(one), str(two)]) == 0
    assert main(["compare", str(baseline), str(merged)]) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS (0 of 2 failed)" in out
    assert "different machines for 1 of 2 runs" in out


def test_the_report_says_how_many_runs_each_machine_trained(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from pytest_convergence.gate.report import write_report

    baseline, merged = Results([record("a"), record("b")], machine=dict(RUNNER)), shards()
    page = tmp_path / "report.html"
    write_report(page, compare_results(baseline, merged), baseline, merged)
    assert "2 runs on 2 machines (ci-1, 4 cpus: 1 run; ci-3, 8 cpus: 1 run)" in page.read_text()
