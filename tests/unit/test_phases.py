"""Where a run's time goes: its phases, the summary's ``other s`` and ``--convergence-timing``'s table,
and the results file's record of them."""

from __future__ import annotations

import json
import math
import time

from factories import make_run

from pytest_convergence.gate import results
from pytest_convergence.gate.results import RunRecord
from pytest_convergence.plugin.summary import SummaryRow, format_table, format_timing
from pytest_convergence.run import PHASES, TRAINING_PHASES, Timing


def test_a_phase_sums_its_blocks_and_other_is_all_but_build_trace_and_train() -> None:
    timing = Timing(wall_time=1.0)
    for _ in range(2):
        with timing.phase("probes"):
            time.sleep(0.01)
    timing.phases.update(build=0.5, trace=1.5, train=2.0, snapshot=0.25)
    assert timing.phases["probes"] >= 0.02
    assert math.isclose(timing.other_time, timing.phases["probes"] + 0.25)
    assert set(TRAINING_PHASES) < set(PHASES)


def test_the_summary_shows_other_seconds_and_the_timing_table_each_phase_with_totals() -> None:
    first, second = make_run([0.5, 0.2], case="first"), make_run([0.4, 0.1], case="second")
    first.timing.phases = {"build": 0.5, "trace": 1.0, "train": 2.0, "probes": 0.1, "snapshot": 0.05}
    second.timing.phases = {"build": 0.25, "trace": 0.5, "train": 1.0, "diagnosis": 0.2}
    rows = [SummaryRow.from_run(first, "passed"), SummaryRow.from_run(second, "passed")]
    table = format_table(rows)
    assert table[0].split()[11:13] == ["other", "s"]
    assert table[2].split()[9] == "0.15" and table[3].split()[9] == "0.20"
    timing = format_timing(rows)
    assert timing[0].split() == [
        "case",
        "dtype",
        "build",
        "trace",
        "train",
        "probes",
        "diagnosis",
        "snapshot",
        "other",
    ]
    assert timing[-2].split() == ["total", "0.75", "1.50", "3.00", "0.10", "0.20", "0.05", "0.35"]
    assert format_timing([SummaryRow.failed_to_train("broken", "float16", "fit", 3)]) == []


def test_the_results_file_keeps_each_run_s_phases(tmp_path) -> None:
    run = make_run([0.5, 0.2])
    record = RunRecord.from_run(run, test="t", status="passed")
    record.phases = {"build": 0.5, "train": 1.0, "results": 0.01}
    path = tmp_path / "r.json"
    results.write(path, results.Results(runs=[record]))
    assert json.loads(path.read_text())["runs"][0]["phases"] == record.phases
    assert results.load(path).runs[0].phases == record.phases
