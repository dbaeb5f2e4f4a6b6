"""Inputs checked before any training: a problem found then costs the user seconds, not the suite.

Each test gives a session (or ``pytest-convergence explain``) one bad input, as a user would, and
checks three things: the message names the option, the file and a fix that works; the exit code
is a usage error; and nothing trained before it (no results file, no summary, no run printed, and
a step budget that would take minutes to train).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import seed_spec

from pytest_convergence.cli import main

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    seed = Case.sequential(
        "seed",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": LEARNING_RATE}},
        steps=STEPS, seed=0,
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_seed(convergence_train, convergence_snapshot):
        assert convergence_train(seed) == convergence_snapshot
    """
)
LONG = 2_000_000
"""A step budget that takes minutes to train: a session that stops in seconds did not train it."""


def suite(steps: int = 30, learning_rate: float = 2.55) -> str:
    return SUITE.replace("STEPS", str(steps)).replace("LEARNING_RATE", repr(learning_rate))


def assert_stopped_before_training(result: pytest.RunResult, *lines: str) -> None:
    """A usage error (exit 4) with ``lines`` on stderr, and no test run, summary or gate."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(list(lines))
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "convergence summary" not in output and "passed" not in output and "failed" not in output


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """``directory`` made unwritable for this process, root included (``chattr +i``), or a skip."""
    directory.chmod(0o555)
    immutable = False
    try:
        if os.geteuid() == 0:  # root writes through permissions: make the directory immutable
            made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
            immutable = made.returncode == 0
        try:
            (directory / ".probe").write_text("")
        except OSError:
            pass
        else:
            (directory / ".probe").unlink()
            pytest.skip("cannot make a directory read-only here (root without chattr +i)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=False)
        directory.chmod(0o755)


# ------------------------------------------------------------------------ the baseline file


BAD_BASELINES = {
    "missing": (None, "*old.json: no such file; the baseline is the results file of a session*"),
    "empty": (
        "",
        "*old.json: the file is empty, not a results file; regenerate it with pytest --convergence*",
    ),
    "truncated": ('{"schema": 1, "runs": [', "*old.json: not valid JSON at line 1*truncated*regenerate it*"),
    "another schema": (
        '{"schema": 99, "runs": []}',
        "*old.json: results schema 99*reads schema 1; regenerate*",
    ),
    "not a results file": ("[1, 2, 3]", "*old.json: not a pytest-convergence results file (no 'schema')*"),
}


@pytest.mark.parametrize("kind", list(BAD_BASELINES))
def test_a_bad_baseline_is_a_usage_error_before_any_test_trains(
    user_suite: pytest.Pytester, kind: str
) -> None:
    content, message = BAD_BASELINES[kind]
    if content is not None:
        (user_suite.path / "old.json").write_text(content)
    user_suite.makepyfile(test_user=suite(steps=LONG))
    result = user_suite.runpytest(
        "--convergence", "--convergence-baseline=old.json", "--convergence-results=new.json"
    )
    assert_stopped_before_training(result, f"ERROR: --convergence-baseline: {message}")
    assert not (user_suite.path / "new.json").exists()
    assert result.duration < 60, "the budget takes minutes to train: it stopped before training"


def test_a_baseline_that_is_a_directory_is_named_as_such(user_suite: pytest.Pytester) -> None:
    (user_suite.path / "old.json").mkdir()
    user_suite.makepyfile(test_user=suite(steps=LONG))
    result = user_suite.runpytest("--convergence", "--convergence-baseline=old.json")
    assert_stopped_before_training(
        result, "ERROR: --convergence-baseline: *old.json is a directory; give the results file*"
    )


def test_results_and_baseline_naming_one_file_are_refused_and_the_baseline_kept(
    user_suite: pytest.Pytester,
) -> None:
    # The user's report: the results overwrote the baseline before the gate read it, and a case
    # that changed (0.4716 -> 0.0989) was reported "0.0989 -> 0.0989 ... PASS".
    user_suite.makepyfile(test_user=suite())
    user_suite.runpytest(
        "--convergence", "--convergence-results=old.json", "--snapshot-update"
    ).assert_outcomes(passed=1)
    baseline = (user_suite.path / "old.json").read_bytes()
    assert json.loads(baseline)["runs"][0]["case"] == "seed"
    (user_suite.path / "sub").mkdir()
    (user_suite.path / "link.json").symlink_to(user_suite.path / "old.json")

    user_suite.makepyfile(test_user=suite(steps=LONG, learning_rate=0.001))  # a changed case
    for spelling in ("old.json", "./sub/../old.json", "link.json"):
        result = user_suite.runpytest(
            "--convergence", "--convergence-baseline=old.json", f"--convergence-results={spelling}"
        )
        assert_stopped_before_training(
            result,
            "ERROR: --convergence-results and --convergence-baseline name the same file (old.json): the "
            "results would overwrite the baseline before the gate reads it*",
            "  fix: write the results elsewhere, e.g. --convergence-results=new.json*",
        )
        assert (user_suite.path / "old.json").read_bytes() == baseline, spelling


# ------------------------------------------------------------------- where results and snapshots go


def test_results_under_a_file_are_refused_before_training(user_suite: pytest.Pytester) -> None:
    (user_suite.path / "out").write_text("a file, not a directory")
    user_suite.makepyfile(test_user=suite(steps=LONG))
    result = user_suite.runpytest("--convergence", "--convergence-results=out/new.json")
    assert_stopped_before_training(
        result,
        "ERROR: --convergence-results=out/new.json: cannot write the results file: *out is a file, not a "
        "directory*",
        "  fix: give a file path in a directory you can write to, e.g. --convergence-results=results.json",
    )
    assert result.duration < 60


def test_results_in_a_read_only_directory_are_refused_before_training(user_suite: pytest.Pytester) -> None:
    locked = user_suite.path / "locked"
    locked.mkdir()
    user_suite.makepyfile(test_user=suite(steps=LONG))
    with read_only(locked):
        result = user_suite.runpytest("--convergence", "--convergence-results=locked/new.json")
    assert_stopped_before_training(
        result,
        "ERROR: --convergence-results=locked/new.json: cannot write the results file: "
        "cannot write in *locked*",
    )
    assert not (locked / "new.json").exists()


def test_a_read_only_snapshot_directory_is_a_usage_error_before_training(user_suite: pytest.Pytester) -> None:
    # The user's report: a PermissionError with about 9 frames inside the assertion message.
    user_suite.makepyfile(test_user=suite())
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=1)
    snapshots = user_suite.path / "__snapshots__" / "test_user"
    stored = {path.name: path.read_bytes() for path in snapshots.iterdir()}
    user_suite.makepyfile(test_user=suite(steps=LONG, learning_rate=0.001))
    with read_only(snapshots):
        result = user_suite.runpytest("--convergence", "--snapshot-update", "--convergence-results=new.json")
    assert_stopped_before_training(
        result,
        "ERROR: --snapshot-update: cannot write the snapshots of test_user.py::test_seed[[]float32[]]: "
        "cannot write in *__snapshots__/test_user*",
        "  fix: make *__snapshots__/test_user writable (or run without --snapshot-update to compare only)",
    )
    assert {path.name: path.read_bytes() for path in snapshots.iterdir()} == stored
    assert result.duration < 60


def test_a_read_only_snapshot_directory_under_xdist_fails_the_test_with_one_clear_message(
    user_suite: pytest.Pytester,
) -> None:
    # Workers do not stop the session early; each test meets the same check where it writes.
    pytest.importorskip("xdist")
    user_suite.makepyfile(test_user=suite())
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=1)
    snapshots = user_suite.path / "__snapshots__" / "test_user"
    user_suite.makepyfile(test_user=suite(learning_rate=0.001))
    with read_only(snapshots):
        result = user_suite.runpytest_subprocess("--convergence", "--snapshot-update", "-n", "1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*__snapshots__/test_user/test_seed[[]float32[]].convergence.txt: cannot write the snapshot: "
            "cannot write in *__snapshots__/test_user*",
            "  fix: make *__snapshots__/test_user writable (or run without --snapshot-update to compare *",
        ]
    )
    assert "PermissionError" not in result.stdout.str() and "Traceback" not in result.stdout.str()


# ---------------------------------------------------------------------------------- explain

SPEC = seed_spec('name = "seed"\ndtypes = ["float32"]\nsteps = 40\nseed = 0\n')


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "seed.convergence.toml"
    path.write_text(SPEC, encoding="utf-8")
    return path


@pytest.mark.parametrize("place", ["under a file", "a directory", "a read-only directory"])
def test_explain_plot_to_an_unwritable_place_fails_in_one_line_before_training(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], place: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "dir").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    target = {
        "under a file": tmp_path / "file" / "loss.png",
        "a directory": tmp_path / "dir",
        "a read-only directory": locked / "loss.png",
    }[place]
    with read_only(locked) if place == "a read-only directory" else contextlib.nullcontext():
        code = main(["explain", str(spec), "--steps", "1000000", "--plot", str(target)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == "", "nothing trained: no run was described"
    assert err.startswith(f"error: --plot {target}: cannot write the picture: ")
    assert err.endswith("; fix: give a .png file path in a directory you can write to\n")
    assert err.count("\n") == 1
    expected = {
        "under a file": f"{tmp_path / 'file'} is a file, not a directory",
        "a directory": f"{target} is a directory",
        "a read-only directory": f"cannot write in {locked}",
    }[place]
    assert expected in err


def test_explain_a_dtype_the_spec_does_not_list_trains_it_and_says_so(
    spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", str(spec), "--dtype", "float64", "--steps", "5"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[:1] == [  # before training; TensorFlow may log after it
        f"note: {spec} lists dtypes float32, not float64; training float64 anyway, as asked "
        "(no expectation of the spec applies to it)"
    ]
    assert out.startswith("seed in float64 (loop engine): 5 steps")
    # a dtype the spec lists needs no note
    assert main(["explain", str(spec), "--dtype", "float32", "--steps", "5"]) == 0
    assert "note:" not in capsys.readouterr().err
