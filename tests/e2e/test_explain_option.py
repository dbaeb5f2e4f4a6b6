"""``--convergence-explain``: after the summary table, every trained run's story, as a user sees it,
with and without pytest-xdist (the stories travel from the workers with the summary rows)."""

from __future__ import annotations

import itertools
import re
import textwrap

import pytest
from factories import HEAVY_MODULES_CONFTEST

USER_TESTS = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    def seed(name, learning_rate):
        return Case.sequential(
            name,
            layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
            x=[[-1.0], [1.0]], y=[1.0, 0.0],
            loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
            optimizer={"class_name": "RMSprop", "config": {"learning_rate": learning_rate}},
            steps=40, seed=0,
        )

    @pytest.mark.convergence(dtypes=["float16", "float32"])
    def test_fast(convergence_train):
        convergence_train(seed("seed-fast", 2.55))

    @pytest.mark.convergence(dtypes=["float32", "float64"])
    def test_slow(convergence_train):
        convergence_train(seed("seed-slow", 0.01))

    def test_plain():
        assert True
    """
)
RUNS = ["seed-fast[float16]", "seed-fast[float32]", "seed-slow[float32]", "seed-slow[float64]"]
SECTION = "convergence explanations"


def _sections(lines: list[str]) -> dict[str, list[str]]:
    """The terminal's ``=== title ===`` sections, each with its lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        title = re.fullmatch(r"=+ (.+?) =+", line)
        if title:
            current = sections.setdefault(title.group(1), [])
        else:
            current.append(line)
    return sections


def _summary_runs(table: list[str]) -> list[str]:
    """``case[dtype]`` of each row of the summary table, in its order."""
    rows = [line.split() for line in table if line.startswith("seed-")]
    return [f"{row[0]}[{row[1]}]" for row in rows]


def _check_stories(lines: list[str]) -> None:
    sections = _sections(lines)
    assert SECTION in sections, "\n".join(lines)
    stories = sections[SECTION]
    headings = [line for line in stories if line and not line.startswith(" ")]
    # one story per run: its heading names the run, in the summary table's order
    order = _summary_runs(sections["convergence summary"])
    assert sorted(order) == sorted(RUNS)
    assert [heading.split(" ")[0] for heading in headings] == order
    for heading in headings:
        assert re.fullmatch(r"seed-\w+\[float\d+\] \(loop, 40 steps\): [a-z-]+", heading), heading
    # each heading is followed by the story's indented "title: text" lines
    starts = [i for i, line in enumerate(stories) if line in headings] + [len(stories)]
    assert not any(line for line in stories[: starts[0]])
    for start, end in itertools.pairwise(starts):
        told = [line for line in stories[start + 1 : end] if line.strip()]
        assert told, f"no story under {stories[start]!r}"
        assert all(re.match(r"  \S[^:]*: \S", line) for line in told), told


def test_explain_prints_one_story_per_run_after_the_summary(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=USER_TESTS)
    result = user_suite.runpytest("--convergence", "--convergence-explain")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*= convergence summary =*", "*= convergence explanations =*"])
    _check_stories(result.outlines)


def test_explain_under_xdist_prints_the_stories_the_workers_told(user_suite: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    user_suite.makepyfile(test_user=USER_TESTS)
    result = user_suite.runpytest_subprocess("--convergence", "--convergence-explain", "-n", "2")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*= convergence summary =*", "*= convergence explanations =*"])
    _check_stories(result.outlines)
    assert sum(SECTION in line for line in result.outlines) == 1  # the controller's, not the workers'


def test_explain_without_convergence_trains_nothing_and_imports_no_tensorflow(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(test_user=USER_TESTS)
    user_suite.makeconftest(HEAVY_MODULES_CONFTEST)
    result = user_suite.runpytest_subprocess("--convergence-explain", "-s")
    result.assert_outcomes(passed=1, skipped=4)
    result.stdout.fnmatch_lines(["*HEAVY-MODULES: none"])
    assert not any(SECTION in line or "convergence summary" in line for line in result.outlines)


def test_format_stories_skips_runs_that_did_not_train_and_separates_the_rest() -> None:
    from dataclasses import replace

    from pytest_convergence.plugin.summary import SummaryRow, format_stories

    failed = SummaryRow.failed_to_train("broken", "float16", "loop", 30)
    told = [
        replace(failed, case=name, story=f"{name}[float32] (loop, 30 steps): stalled\n  why: x")
        for name in "ab"
    ]
    assert format_stories([told[0], failed, told[1]]) == [
        "a[float32] (loop, 30 steps): stalled",
        "  why: x",
        "",
        "b[float32] (loop, 30 steps): stalled",
        "  why: x",
    ]
    assert format_stories([failed]) == []
