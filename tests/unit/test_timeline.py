"""``pytest-convergence history``: many results files as one table and page, from synthetic results
(no TensorFlow): the order along the versions, each change judged by the gate's rule, a case
missing in some files, NaN losses, one file only, other machines, a file that cannot be read, and
the page as headless Chromium renders it. tests/e2e/test_history_command.py does it on real runs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from history_browser import check_history_dom, rendered_dom, screenshot

from pytest_convergence.cli import main
from pytest_convergence.gate import results as results_file
from pytest_convergence.gate.results import Results, RunRecord
from pytest_convergence.gate.timeline import ADDED, FIRST, MISSING, PARTED, SAME, Timeline, build
from pytest_convergence.gate.timeline_html import render, write_history
from pytest_convergence.gate.timeline_markdown import markdown
from pytest_convergence.gate.verdict_data import FAIL
from pytest_convergence.snapshot.format import checkpoint_steps

MACHINE = {"id": "aaaa", "cpu_model": "Xeon", "cpus": 16, "node": "ci"}
OTHER_MACHINE = {"id": "bbbb", "cpu_model": "EPYC", "cpus": 2, "node": "laptop"}
PIPE_CASE = "a|b<net>"


def decay(steps: int = 400, rate: float = 0.02) -> np.ndarray:
    return 0.7 * np.exp(-rate * np.arange(1, steps + 1))


def record(
    case: str,
    dtype: str,
    losses: np.ndarray,
    tensorflow: str,
    *,
    outcome: str = "descending",
    target_loss: float | None = 1e-3,
    cpu_time: float = 1.0,
) -> RunRecord:
    steps = checkpoint_steps(losses.size)
    reached = np.flatnonzero(losses <= target_loss) if target_loss is not None else np.zeros(0)
    return RunRecord(
        case=case,
        dtype=dtype,
        engine="loop",
        test=f"tests/test_cases.py::test_{case}[{dtype}]",
        status="passed",
        outcome=outcome,
        evidence={},
        final_loss=float(losses[-1]),
        steps=int(losses.size),
        target_loss=target_loss,
        steps_to_target=int(reached[0]) + 1 if reached.size else None,
        converged=None if target_loss is None else bool(reached.size),
        expectation_met=None,
        expectation_problems=[],
        checkpoint_steps=[int(s) for s in steps],
        checkpoint_losses=[float(v) for v in losses[steps - 1]],
        steps_per_second=losses.size / cpu_time,
        wall_times=[cpu_time] * 3,
        cpu_times=[cpu_time, cpu_time * 1.01, cpu_time * 0.99],
        loss_dtype="float32",
        variable_dtype=dtype,
        versions={"tensorflow": tensorflow, "keras": "3.15.1"},
    )


def version(tensorflow: str, runs: list[RunRecord], machine: dict[str, object] = MACHINE) -> Results:
    runs = [replace(run, versions={"tensorflow": tensorflow, "keras": "3.15.1"}) for run in runs]
    return Results(runs=runs, machine=dict(machine), created=f"2025-01-01T00:00:{len(tensorflow):02d}")


def catalogue() -> list[tuple[Path, Results]]:
    """Four versions, given out of order: ``steady`` never changes; ``nudged`` parts within
    tolerance at 2.17; ``broken`` stops reaching its target at 2.18; ``gappy`` is missing from
    2.17 and judged against 2.16 at 2.18; ``fresh`` appears at 2.18; ``blown`` ends in NaN at 2.17."""
    steady = decay()
    nudged = steady * (1 + 1e-6 * (np.arange(steady.size) >= 40))
    slow = decay(rate=0.005)
    blown = steady.copy()
    blown[150:] = np.nan

    def runs(tensorflow: str) -> list[RunRecord]:
        late = tensorflow >= "2.17"
        chosen = [
            record("steady", "float32", steady, tensorflow),
            record("nudged", "float32", nudged if late else steady, tensorflow),
            record("broken", "float16", slow if tensorflow >= "2.18" else steady, tensorflow),
            record("blown", "float32", blown if late else steady, tensorflow,
                   outcome="diverged" if late else "descending"),
            record(PIPE_CASE, "float64", steady, tensorflow, target_loss=None),
        ]  # fmt: skip
        if tensorflow != "2.17.0":
            chosen.append(record("gappy", "float32", steady, tensorflow))
        if tensorflow >= "2.18":
            chosen.append(record("fresh", "bfloat16", steady, tensorflow))
        return chosen

    given = ["2.18.0", "2.16.1", "2.19.0", "2.17.0"]
    return [(Path(f"results-{tf}.json"), version(tf, runs(tf))) for tf in given]


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return build(catalogue())


def marks(timeline: Timeline, case: str) -> list[str]:
    line = next(line for line in timeline.lines if line.case == case)
    return [cell.mark for cell in line.cells]


def test_columns_follow_the_versions_not_the_command_line(timeline: Timeline) -> None:
    assert [column.short for column in timeline.columns] == ["2.16.1", "2.17.0", "2.18.0", "2.19.0"]
    assert timeline.columns[0].path.name == "results-2.16.1.json"
    kept = build(catalogue(), keep_order=True)
    assert [column.short for column in kept.columns] == ["2.18.0", "2.16.1", "2.19.0", "2.17.0"]


def test_ties_and_unreadable_versions_keep_the_command_line_order() -> None:
    files = catalogue()
    nightly = [(Path(f"night-{n}.json"), version("2.20.0", files[0][1].runs[:1])) for n in (3, 1, 2)]
    odd = (Path("odd.json"), version("not-a-version", files[1][1].runs[:1]))
    given = [nightly[0], files[2], odd, nightly[1], files[1], nightly[2]]
    ordered = build(given)
    assert [c.path.name for c in ordered.columns] == [
        "results-2.16.1.json", "results-2.19.0.json", "odd.json", "night-3.json", "night-1.json",
        "night-2.json",
    ]  # fmt: skip
    assert any("odd.json: cannot read its versions" in warning for warning in ordered.warnings)


def test_each_change_is_judged_by_the_gate_between_neighbours(timeline: Timeline) -> None:
    assert marks(timeline, "steady") == [FIRST, SAME, SAME, SAME]
    assert marks(timeline, "nudged") == [FIRST, PARTED, SAME, SAME]
    assert marks(timeline, "broken") == [FIRST, SAME, FAIL, SAME]
    assert marks(timeline, "blown") == [FIRST, FAIL, SAME, SAME]
    broken = next(line for line in timeline.lines if line.case == "broken").cells[2]
    assert broken.against == 1
    assert any(reason.startswith("steps to target 328 -> never") for reason in broken.reasons)
    nudged = next(line for line in timeline.lines if line.case == "nudged").cells[1]
    assert "the histories part at step 41, within tolerance" in nudged.reasons
    assert timeline.counts(2) == {FAIL: 1, ADDED: 1, SAME: 5}


def test_a_case_missing_in_between_is_judged_against_the_last_file_that_has_it(timeline: Timeline) -> None:
    assert marks(timeline, "gappy") == [FIRST, MISSING, SAME, SAME]
    gappy = next(line for line in timeline.lines if line.case == "gappy")
    assert gappy.cells[1].record is None and gappy.cells[1].reasons == ["not in this file"]
    assert gappy.cells[2].against == 0
    assert any("missing in between" in reason for reason in gappy.cells[2].reasons)
    assert marks(timeline, "fresh") == [MISSING, MISSING, ADDED, SAME]


def test_the_markdown_table_holds_each_runs_numbers_and_a_footnote_per_change(timeline: Timeline) -> None:
    text = markdown(timeline)
    assert text.startswith("## Convergence history: 4 versions, 7 cases, 7 runs\n")
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if " | float" in line}
    cells = [cell.strip() for cell in rows["broken"].strip("|").split(" | ")]
    assert cells[2] == "0.0002348 · 328 steps · descending · 400/s"
    assert cells[4].startswith("❌[")
    assert cells[4].endswith("0.09473 · target not reached · descending · 400/s")
    note = cells[4][2 : cells[4].index("]")]
    assert f"{note}. **broken [float16]**, 2.17.0 → 2.18.0: FAIL: " in text
    assert "final loss 0.0002348 -> 0.09473" in text
    assert "nan · target not reached · diverged" in rows["blown"]
    assert "| a\\|b&lt;net> | float64 | 0.0002348 · no target · descending" in text  # escaped
    assert "| gappy | float32 | 0.0002348 · 328 steps · descending · 400/s | ∅[2] - | = " in text
    assert "2. **gappy [float32]**, 2.16.1 → 2.17.0: missing: not in this file" in text
    assert "| fresh | bfloat16 | ∅ - | ∅ - | ➕ 0.0002348 · 328 steps" in text


def test_one_file_only_is_a_table_of_one_column(tmp_path: Path) -> None:
    one = build(catalogue()[:1])
    assert len(one.columns) == 1 and {cell.mark for line in one.lines for cell in line.cells} == {FIRST}
    assert any("one results file: nothing to judge" in warning for warning in one.warnings)
    assert one.changes() == []
    check_history_dom(render(one))  # the same structure as a browser would see it


def test_files_from_other_machines_compare_no_speed() -> None:
    files = catalogue()[:2]
    files[1] = (files[1][0], version("2.16.1", files[1][1].runs, machine=OTHER_MACHINE))
    mixed = build(files)
    assert [column.machine for column in mixed.columns] == ["A", "B"]
    assert any("2 machines" in w and "speed is compared only between neighbours" in w for w in mixed.warnings)
    text = markdown(mixed)
    assert "400/s (other machine)" in text
    assert "| 2 | tensorflow 2.18.0, keras 3.15.1 | results-2.18.0.json | B |" in text


def test_an_unreadable_file_is_named_with_the_fix_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "results-2.16.1.json"
    results_file.write(good, catalogue()[1][1])
    broken = tmp_path / "results-2.17.0.json"
    broken.write_text('{"schema": 1, "runs": [')
    assert main(["history", str(good), str(broken)]) == 2
    error = capsys.readouterr().err
    assert f"{broken}: not valid JSON" in error and "--convergence-results=" in error
    assert main(["history", str(good), str(tmp_path / "absent.json")]) == 2
    assert "absent.json: cannot read the results file: no such file" in capsys.readouterr().err


def test_the_command_prints_markdown_or_writes_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for path, content in catalogue():
        results_file.write(tmp_path / path, content)
        paths.append(str(tmp_path / path))
    assert main(["history", *paths]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("## Convergence history: 4 versions")
    written = ["--markdown", str(tmp_path / "h.md"), "--html", str(tmp_path / "h.html")]
    assert main(["history", *paths, *written]) == 0
    assert (tmp_path / "h.md").read_text(encoding="utf-8") == printed
    assert (tmp_path / "h.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert main(["history", *paths, "--keep-order"]) == 0
    assert "| case | dtype | 1: 2.18.0 | 2: 2.16.1 |" in capsys.readouterr().out


def test_the_page_is_self_contained_and_marks_the_changes(timeline: Timeline) -> None:
    page = render(timeline)
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert 'href="#' in page and "src=" not in page
    assert page.count('data-mark="FAIL"') == 2 and page.count('data-mark="parted"') == 1
    assert page.count('<td class="run fail"') == 2 and "td.fail {" in page  # what the CSS colours
    assert page.count('class="judged fail"') == 2  # a red ring per failed change, on its plot
    assert "a|b&lt;net&gt;" in page and PIPE_CASE not in page
    assert 'title="the gate fails the change (against 2.17.0): history outside rtol' in page
    assert "steps to target 328 -&gt; never" in page


def test_nan_and_zero_losses_are_drawn_on_the_edges() -> None:
    files = catalogue()[:2]
    zero = decay()
    zero[200:] = 0.0
    files[0][1].runs.append(record("edges", "float32", zero, "2.18.0", outcome="reached-zero"))
    nan = decay()
    nan[-1] = math.nan
    files[1][1].runs.append(record("edges", "float32", nan, "2.16.1", outcome="diverged"))
    page = render(build(files))
    figure = page[page.index('<figure id="case-') :]
    edges = figure[figure.index("<h3>edges</h3>") :].split("</figure>")[0]
    assert ">0</text>" in edges and ">NaN</text>" in edges


def test_chromium_renders_the_page(timeline: Timeline, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "history.html"
    write_history(path, timeline)
    assert path.stat().st_mode & 0o644 == 0o644
    counts = check_history_dom(rendered_dom(path))
    assert counts == {
        "versions": 4, "cases": 7, "declared": 7, "figures": 7, "plots": 7,
        "points": 25, "rings": 3, "cells": 28,
    }  # fmt: skip
    png = screenshot(path, tmp_path / "history.png", height=900)
    assert len(png) > 10_000
