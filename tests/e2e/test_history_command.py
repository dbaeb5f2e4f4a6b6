"""``pytest-convergence history`` on real runs: three sessions of one suite, as a nightly job writes
them, whose third trains one case with another learning rate; the history marks that change, its
table holds each session's numbers, and its page renders in headless Chromium with its plots."""

from __future__ import annotations

import re
import textwrap

import pytest
from history_browser import check_history_dom, rendered_dom, screenshot

from pytest_convergence.cli import main
from pytest_convergence.gate import results
from pytest_convergence.gate.timeline import loss_text, speed_text, steps_per_second, steps_text

SUITE = textwrap.dedent(
    """
    import os

    import pytest
    from pytest_convergence import Case

    def seed(name, learning_rate):
        return Case.sequential(
            name,
            layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
            x=[[-1.0], [1.0]], y=[1.0, 0.0],
            loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
            optimizer={"class_name": "RMSprop", "config": {"learning_rate": learning_rate}},
            steps=200, seed=0, target_loss=1e-3,
        )

    @pytest.mark.convergence(dtypes=["float32"])
    @pytest.mark.parametrize("name", ["steady", "tuned"])
    def test_cases(name, convergence_train):
        rate = 0.5 if name == "steady" else float(os.environ["HISTORY_LEARNING_RATE"])
        convergence_train(seed(name, rate))
    """
)


def test_three_sessions_render_a_history_that_marks_the_changed_one(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_suite.makepyfile(test_user=SUITE)
    for night, rate in (("1", "2.55"), ("2", "2.55"), ("3", "0.001")):  # the third night: another rate
        monkeypatch.setenv("HISTORY_LEARNING_RATE", rate)
        session = user_suite.runpytest("--convergence", f"--convergence-results=night-{night}.json")
        session.assert_outcomes(passed=2)
    paths = [user_suite.path / f"night-{night}.json" for night in "123"]
    nights = [results.load(path).by_key() for path in paths]

    markdown, page = user_suite.path / "history.md", user_suite.path / "history.html"
    code = main(["history", *map(str, paths), "--markdown", str(markdown), "--html", str(page)])
    assert code == 0
    text = markdown.read_text(encoding="utf-8")
    assert text.startswith("## Convergence history: 3 versions, 2 cases, 2 runs\n")
    tensorflow = nights[0]["steady", "float32"].versions["tensorflow"]
    assert f"| case | dtype | 1: {tensorflow} (night-1.json) | 2: {tensorflow} (night-2.json) |" in text

    def shown(night: int, case: str) -> str:  # the cell's numbers, as the results file holds them
        run = nights[night][case, "float32"]
        speed = speed_text(steps_per_second(run))
        return " · ".join([loss_text(run.final_loss), steps_text(run), run.outcome, speed])

    rows = {line.split(" | ")[0][2:]: line.strip("| ").split(" | ") for line in text.splitlines()}
    assert rows["steady"] == ["steady", "float32", shown(0, "steady"), f"= {shown(1, 'steady')}",
                              f"= {shown(2, 'steady')}"]  # fmt: skip
    tuned = rows["tuned"]
    assert tuned[2:4] == [shown(0, "tuned"), f"= {shown(1, 'tuned')}"]  # deterministic: the same history
    note = re.fullmatch(r"❌\[(\d+)\] (.*)", tuned[4])
    assert note is not None and note.group(2) == shown(2, "tuned")
    assert nights[2]["tuned", "float32"].steps_to_target is None  # the slower rate misses its target
    assert nights[0]["tuned", "float32"].steps_to_target is not None
    footnote = next(line for line in text.splitlines() if line.startswith(f"{note.group(1)}. "))
    assert f"**tuned [float32]**, {tensorflow} → {tensorflow}: FAIL: " in footnote
    assert "history outside rtol" in footnote and "steps to target" in footnote and "-> never" in footnote
    assert "night-3.json | A | ❌ 1 FAIL, = 1 same |" in text

    html = page.read_text(encoding="utf-8")
    assert html.count('data-mark="FAIL"') == 1 and html.count('data-mark="same"') == 3
    counts = check_history_dom(rendered_dom(page))
    assert counts == {
        "versions": 3, "cases": 2, "declared": 2, "figures": 2, "plots": 2, "points": 6, "rings": 1,
        "cells": 6,
    }  # fmt: skip
    assert len(screenshot(page, user_suite.path / "history.png", height=900)) > 10_000
