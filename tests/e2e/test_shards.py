"""A suite sharded across CI jobs with pytest-split, end to end: an unsharded session stores the
durations, the snapshots and the baseline results; two shards (``--splits 2 --group 1`` and
``--group 2``, each its own process, the second as another machine) each write a results file and
keep the other's snapshots; ``pytest-convergence merge`` joins them, each run with its machine; the
gate passes the merged file against the baseline (docs/gate.md#shards-across-machines)."""

from __future__ import annotations

import json
import textwrap

import pytest
from factories import seed_spec

pytest.importorskip("pytest_split")

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    slow = Case.sequential(
        "slow",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 0.001}},
        steps=20, seed=0,
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_slow(convergence_train, convergence_snapshot):
        assert convergence_train(slow) == convergence_snapshot
    """
)
SPEC = seed_spec('name = "seed"\ndtypes = ["float32"]\nsteps = 20\nseed = 0\n')
"""The other test: a spec file's, whose items syrupy knows through the plugin (snapshot/syrupy_compat.py)."""
ANOTHER_MACHINE = "--tf_xla_auto_jit=0"
"""TF_XLA_FLAGS for the second shard: XLA's default on a CPU, so it trains the same numbers, but the
fingerprint hashes the flags (``xla_flags``): to the gate, another machine."""


QUICK = ("--convergence", "-p", "no:cacheprovider", "--convergence-anatomy=0")
"""Every session: no anatomy of the first steps (a second trace a run), which this test does not read."""


def shard(suite: pytest.Pytester, group: int, *options: str) -> pytest.RunResult:
    """One CI job's session: its group of the suite on the stored durations, in a process of its
    own. ``least_duration`` gives each of two groups one of the two tests."""
    return suite.runpytest_subprocess(
        *QUICK,
        "--splits=2",
        f"--group={group}",
        "--splitting-algorithm=least_duration",
        "--durations-path=durations.json",
        f"--convergence-results=group-{group}.json",
        *options,
    )


def test_two_shards_merge_into_results_that_pass_the_gate_with_each_runs_machine(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    user_suite.makepyfile(test_suite=SUITE)
    (user_suite.path / "seed.convergence.toml").write_text(SPEC)
    snapshots = user_suite.path / "__snapshots__"
    whole = user_suite.runpytest(
        *QUICK,
        "--snapshot-update",
        "--store-durations",
        "--durations-path=durations.json",
        "--convergence-results=baseline.json",
    )
    whole.assert_outcomes(passed=2)
    written = {path.name: path.read_text() for path in snapshots.glob("**/*.txt")}
    assert len(written) == 2 and len(json.loads((user_suite.path / "durations.json").read_text())) == 2

    # the first job updates its snapshots: the second job's tests did not run here, and their
    # snapshots are neither reported unused nor deleted
    first = shard(user_suite, 1, "--snapshot-update")
    first.assert_outcomes(passed=1, deselected=1)
    first.stdout.fnmatch_lines(["*Running group 1/2*"])
    assert "unused" not in first.stdout.str() and "deleted" not in first.stdout.str()
    assert {path.name: path.read_text() for path in snapshots.glob("**/*.txt")} == written

    # the second job on "another machine": its test, against the snapshots as they are (an
    # unused snapshot would fail it)
    monkeypatch.setenv("TF_XLA_FLAGS", ANOTHER_MACHINE)
    second = shard(user_suite, 2)
    second.assert_outcomes(passed=1)
    assert "unused" not in second.stdout.str()

    from pytest_convergence.cli import main
    from pytest_convergence.gate import results
    from pytest_convergence.gate.verdict import compare_results

    def tests(path: str) -> set[str]:
        return {run["test"] for run in json.loads((user_suite.path / path).read_text())["runs"]}

    one, two = tests("group-1.json"), tests("group-2.json")
    assert len(one) == len(two) == 1 and one | two == tests("baseline.json")

    merged = user_suite.path / "merged.json"
    group_files = [str(user_suite.path / f"group-{group}.json") for group in (1, 2)]
    assert main(["merge", str(merged), *group_files]) == 0
    loaded = results.load(merged)
    machines = {run.test: loaded.machine_of(run) for run in loaded.runs}
    assert {machine["xla_flags"] for test, machine in machines.items() if test in one} == {""}
    assert {machine["xla_flags"] for test, machine in machines.items() if test in two} == {ANOTHER_MACHINE}
    assert len(loaded.machine["merged"]) == 2
    assert loaded.session is not None and loaded.session.finished and not loaded.session.missing

    capsys.readouterr()
    assert main(["compare", str(user_suite.path / "baseline.json"), str(merged)]) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS (0 of 2 failed)" in out
    assert "the two results come from different machines for 1 of 2 runs" in out
    assert f"xla flags:  -> {ANOTHER_MACHINE}" in out
    # the first job's run was timed on the baseline's machine: its speed is compared (here: too
    # short to time); the second's is not, and the row says why
    verdict = compare_results(results.load(user_suite.path / "baseline.json"), loaded)
    notes = {row.new.test: row.speed_note for row in verdict.rows if row.new is not None}
    (in_one,), (in_two,) = one, two
    assert notes[in_one].startswith("not compared: runs under 0.5 s of CPU are too short to time")
    ids = [
        loaded.machine_of(run)["id"] for test in (in_one, in_two) for run in loaded.runs if run.test == test
    ]
    assert notes[in_two] == f"not compared: other machine (fingerprint {ids[0]} / fingerprint {ids[1]})"
