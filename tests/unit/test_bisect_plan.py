"""The bisection's search as data: probes shared between cases, each case's step found in
ceil(log2(n)) probes, two steps found as two, a borderline or unstable case said to be so, a
configuration that cannot be used stepped around; and the line of releases it walks."""

from __future__ import annotations

import math

import pytest

from pytest_convergence.errors import GateError
from pytest_convergence.gate.bisect import BOTH, MISSING, NEITHER, NEW, OLD, Plan
from pytest_convergence.gate.releases import Configuration, explicit_path, release_path


def run(plan: Plan, truth: dict[tuple[str, str], list[str]], unusable: set[int] = frozenset()) -> int:
    """Drive the plan with known states per configuration; the number of probes it took."""
    while (step := plan.next_probe()) is not None:
        index, keys = step
        if index in unusable:
            plan.skipped[index] = "would not install"
            continue
        plan.record(index, {key: (truth[key][index], "") for key in keys})
    return len(plan.probes)


def one_step(size: int, at: int) -> list[str]:
    return [OLD if i < at else NEW for i in range(size)]


@pytest.mark.parametrize("size", [2, 3, 5, 8, 11, 50])
def test_every_step_of_one_case_is_found_in_log2_probes(size: int) -> None:
    for at in range(1, size):
        plan = Plan.start(size, [("c", "float32")])
        probes = run(plan, {("c", "float32"): one_step(size, at)})
        assert plan.searches[("c", "float32")].steps() == [(at - 1, at)]
        assert probes <= math.ceil(math.log2(size - 1)) if size > 2 else probes == 0


def test_cases_that_change_together_share_every_probe_and_two_mechanisms_are_found_apart() -> None:
    size = 11
    truth = {(f"a{i}", "float32"): one_step(size, 3) for i in range(5)}
    truth |= {(f"b{i}", "float16"): one_step(size, 8) for i in range(3)}
    plan = Plan.start(size, list(truth))
    probes = run(plan, truth)
    assert {key: plan.searches[key].steps() for key in truth} == {
        key: [(2, 3)] if key[0].startswith("a") else [(7, 8)] for key in truth
    }
    # each group costs its own halvings, and what both want is probed once
    assert probes <= 2 * (math.ceil(math.log2(size - 1)) + 1)
    assert len(set(plan.probes)) == len(plan.probes)


def test_a_case_that_changes_in_two_steps_shows_both() -> None:
    size = 9
    states = [OLD, OLD, OLD, NEITHER, NEITHER, NEITHER, NEW, NEW, NEW]
    plan = Plan.start(size, [("c", "float16")])
    run(plan, {("c", "float16"): states})
    assert plan.searches[("c", "float16")].steps() == [(2, 3), (5, 6)]


def test_a_probe_within_tolerance_of_both_sides_makes_the_case_borderline_not_forced() -> None:
    size = 9
    states = [OLD, OLD, OLD, BOTH, BOTH, BOTH, NEW, NEW, NEW]
    plan = Plan.start(size, [("c", "float32")])
    run(plan, {("c", "float32"): states})
    search = plan.searches[("c", "float32")]
    assert search.borderline in (3, 4, 5)
    assert search.wanted(set()) is None  # nothing more is probed for it
    assert sum(state == BOTH for state in search.states.values()) == 2  # two such runs, then it stops


def test_a_run_within_tolerance_of_both_sides_outside_the_step_changes_nothing() -> None:
    size = 9
    states = [OLD, OLD, OLD, OLD, OLD, NEW, BOTH, NEW, NEW]  # the step is at 5, whatever 6 says
    plan = Plan.start(size, [("c", "float32")])
    plan.record(6, {("c", "float32"): (BOTH, "")})
    run(plan, {("c", "float32"): states})
    search = plan.searches[("c", "float32")]
    assert search.borderline is None and search.steps() == [(4, 5)]


def test_probes_out_of_order_make_the_case_unstable() -> None:
    size = 9
    states = [OLD, OLD, NEW, NEW, NEITHER, NEITHER, NEITHER, NEITHER, NEW]  # new, then neither
    plan = Plan.start(size, [("c", "float32")])
    run(plan, {("c", "float32"): states})
    assert plan.searches[("c", "float32")].contradiction is not None


def test_a_configuration_that_cannot_be_used_is_stepped_around_and_the_step_says_so() -> None:
    size = 9
    plan = Plan.start(size, [("c", "float32")])
    run(plan, {("c", "float32"): one_step(size, 4)}, unusable={4})
    assert plan.searches[("c", "float32")].steps() == [(3, 5)]  # 4 could not decide it
    assert 4 in plan.skipped


def test_a_case_whose_runs_fail_in_two_configurations_stops_and_its_step_names_them() -> None:
    size = 12
    states = [OLD, OLD, OLD, MISSING, MISSING, MISSING, MISSING, MISSING, NEW, NEW, NEW, NEW]
    plan = Plan.start(size, [("c", "float32")])
    probes = run(plan, {("c", "float32"): states})
    search = plan.searches[("c", "float32")]
    assert len(search.failing) == 2 and probes <= 4
    low, high = search.steps()[0]
    assert low <= 2 and high >= 8
    assert "failed there" in search.undecided_because(search.failing[0], {})


def test_the_line_from_keras_2_moves_keras_3_on_the_first_tensorflow_without_keras_2_then_tensorflow() -> (
    None
):
    tensorflow = ["2.14.0", "2.15.0", "2.15.1", "2.16.1", "2.16.2", "2.17.0", "2.21.0"]
    keras = ["2.15.0", "3.0.0", "3.0.5", "3.1.0", "3.15.0", "3.15.1", "3.16.0"]
    path = release_path(
        {"tensorflow": "2.15.0", "keras": "2.15.0"},
        {"tensorflow": "2.21.0", "keras": "3.15.1"},
        tensorflow,
        keras,
        ["2.15.1", "2.16.0", "2.17.0"],
    )
    assert (
        [c.name for c in path]
        == [
            "2.15.0",
            "2.15.1",
            "2.16.1-tf-keras-2.16.0",  # Keras 2 first: TensorFlow 2.16.1 apart from Keras 3
            "2.16.1-keras-3.0.0",
            "2.16.1-keras-3.0.5",
            "2.16.1-keras-3.1.0",
            "2.16.1-keras-3.15.0",
            "2.16.1-keras-3.15.1",
            "2.16.2-keras-3.15.1",
            "2.17.0-keras-3.15.1",
            "2.21.0-keras-3.15.1",
        ]
    )
    assert path[2].describe() == "TensorFlow 2.16.1 (Keras 2: tf-keras 2.16.0)"
    assert path[3].describe() == "TensorFlow 2.16.1 (Keras 3.0.0)"


def test_the_line_between_two_keras_3_sides_moves_tensorflow_with_the_old_keras_then_keras() -> None:
    path = release_path(
        {"tensorflow": "2.19.0", "keras": "3.9.2"},
        {"tensorflow": "2.21.0", "keras": "3.15.1"},
        ["2.19.0", "2.19.1", "2.20.0", "2.21.0"],
        ["3.9.2", "3.10.0", "3.15.1"],
    )
    assert [c.name for c in path] == [
        "2.19.0-keras-3.9.2",
        "2.19.1-keras-3.9.2",
        "2.20.0-keras-3.9.2",
        "2.21.0-keras-3.9.2",
        "2.21.0-keras-3.10.0",
        "2.21.0-keras-3.15.1",
    ]


def test_a_line_by_hand_names_each_configuration_once() -> None:
    assert [c.name for c in explicit_path("r1", "r4", ["r2", "r3"])] == ["r1", "r2", "r3", "r4"]
    assert explicit_path("r1", "r2", [])[0] == Configuration("r1", label="r1", by_hand=True)
    assert explicit_path("r1", "r2", [])[0].describe("3.15.1") == "r1"
    with pytest.raises(GateError, match="every configuration once"):
        explicit_path("r1", "r3", ["r1", "r2"])
