"""Messages that name the field at fault and a fix that works, and help that says every default.

No TensorFlow: dtype names, spec files, the marker (collection only), the command line's help,
``compare`` and ``merge`` on hand-written results files.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from factories import seed_spec
from test_results import record, write_file

from pytest_convergence import Case
from pytest_convergence.cli import build_parser, main
from pytest_convergence.dtypes import dtype_info, parse_dtype_list, parse_dtype_names
from pytest_convergence.errors import CaseError, first_line
from pytest_convergence.spec.loader import SpecError, load_spec

DENSE = [{"class_name": "Dense", "config": {"units": 1}}]


# ------------------------------------------------------------------------------ dtype names
@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("fp16", "float16"),
        ("half", "float16"),
        ("bf16", "bfloat16"),
        ("f32", "float32"),
        ("fp32", "float32"),
        ("double", "float64"),
        ("mixed16", "mixed_float16"),
        ("mixed_bf16", "mixed_bfloat16"),
        ("Float16", "float16"),
        ("flaot32", "float32"),
    ],
)
def test_a_dtype_alias_gets_did_you_mean_and_a_fix(given: str, meant: str) -> None:
    with pytest.raises(CaseError) as caught:
        dtype_info(given, where="dtypes")
    assert caught.value.field == "dtypes"
    assert str(caught.value) == (
        f"field 'dtypes': unknown dtype {given!r}; valid dtypes are: float16, bfloat16, float32, float64, "
        f"mixed_float16, mixed_bfloat16; did you mean {meant!r}?"
    )  # one line: the "did you mean" is the fix


@pytest.mark.parametrize("given", ["float8", "int8", "xyz"])
def test_a_name_close_to_no_dtype_gets_no_guess(given: str) -> None:
    with pytest.raises(CaseError) as caught:
        dtype_info(given)
    assert "did you mean" not in str(caught.value)
    assert "valid dtypes are: float16, bfloat16" in str(caught.value)


@pytest.mark.parametrize(
    ("given", "fix"),
    [("float16", 'write dtypes=["float16"]'), ("float16, float32", 'write dtypes=["float16", "float32"]')],
)
def test_a_string_where_a_list_of_dtypes_belongs_is_an_error(given: str, fix: str) -> None:
    with pytest.raises(CaseError) as caught:
        parse_dtype_names(given, where="test_x dtypes")
    assert f"dtypes takes a list of dtype names, got the string {given!r}" in str(caught.value)
    assert caught.value.fix == fix
    # the command line's and the ini's comma-separated form is still a list
    assert parse_dtype_list(given, where="--convergence-dtypes") == [
        name.strip() for name in given.split(",")
    ]


def test_marker_dtypes_as_a_string_fails_collection_with_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.convergence(dtypes="float16")
        def test_string(convergence_train):
            pass
        """
    )
    result = pytester.runpytest("--convergence")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "field 'test_string dtypes': dtypes takes a list of dtype names, got the string 'float16'",
            '  fix: write dtypes=["float16"]',
        ]
    )


def test_marker_dtype_alias_is_reported_once_with_did_you_mean(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.convergence(dtypes=["float32", "fp16"])
        def test_alias(convergence_train):
            pass
        """
    )
    # -rN: no short summary, whose copy of the message is cut or whole by the terminal's width.
    result = pytester.runpytest("--convergence", "-rN")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "field 'test_alias dtypes': unknown dtype 'fp16'; valid dtypes are: float16," in out
    assert "During handling of the above exception" not in out
    assert out.count("mixed_bfloat16; did you mean 'float16'?") == 1  # printed once, not chained


def test_command_line_dtype_alias_is_a_usage_error_with_did_you_mean(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--convergence", "--convergence-dtypes=float32,bf16")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = "ERROR: field '--convergence-dtypes': unknown dtype 'bf16'; valid dtypes are: *"
    result.stderr.fnmatch_lines([expected + "; did you mean 'bfloat16'?"])


# ------------------------------------------------------------------------------ spec files
@pytest.mark.parametrize(
    ("header", "field", "message"),
    [
        ('dtypes = "float16"', "dtypes", 'write it as a list: dtypes = ["float16"]'),
        ('dtypes = "float16,float32"', "dtypes", 'write it as a list: dtypes = ["float16", "float32"]'),
        ('dtypes = ["fp16"]', "dtypes[0]", "(did you mean 'float16'?)"),
        ('dtypes = ["float32"]\nloss_dtype = "fp32"', "loss_dtype", "(did you mean 'float32'?)"),
        ('metrics = "accuracy"', "metrics", 'write it as a list: metrics = ["accuracy"]'),
    ],
)
def test_spec_file_messages_name_the_field_and_the_fix(
    tmp_path: Path, header: str, field: str, message: str
) -> None:
    path = tmp_path / "bad.convergence.toml"
    path.write_text(seed_spec(f"{header}\nsteps = 5"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.field == field
    assert message in str(caught.value)


def test_spec_expectation_under_a_dtype_alias_gets_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "bad.convergence.toml"
    path.write_text(seed_spec('dtypes = ["float16"]\nsteps = 5', "\n[expect.half]\nconverged = true\n"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.field == "expect.half"
    assert "(did you mean 'float16'?)" in str(caught.value)


# ------------------------------------------------------------------------------ help
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_help_describes_every_command_without_markup(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out
    assert "explain one run of a spec file" not in out  # the old description, of one command only
    for usage in ("explain", "SPEC|TEST:", "compare", "OLD NEW:", "merge", "OUTPUT INPUT...:", "gate"):
        assert usage in out
    assert "pytest --convergence" in out


@pytest.mark.parametrize("command", ["explain", "compare", "merge", "gate"])
def test_every_option_of_every_command_has_help_with_its_default(command: str) -> None:
    parser = _subparsers(build_parser())[command]
    assert parser.description, f"{command} has no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name} has no help"
        if action.option_strings:
            assert "default" in action.help, f"{command} {name} does not say its default"


def test_compare_help_explains_the_thresholds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a run fails when its final loss grew by more than R relative to the old one" in out
    assert "(1 + R) times the old number of steps to reach its target loss" in out
    assert "(default: 0.1)" in out


def test_merge_help_says_the_output_comes_first(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: pytest-convergence merge [-h] [--repeats] OUTPUT INPUT [INPUT ...]" in out
    assert "OUTPUT comes first, then the files to merge" in out
    assert "example: pytest-convergence merge all.json job1.json job2.json" in out


def test_every_pytest_option_and_ini_key_says_its_default(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    section = text[text.index("training convergence (pytest-convergence):") :]
    section = section[: section.index("\n\n")]
    options = re.split(r"\n  (?=--convergence)", section)[1:]
    assert len(options) >= 11
    for block in options:
        assert "(default:" in " ".join(block.split()), block
    ini = re.findall(r"^  (convergence\w*) \(\w+\):(.*\n(?: {20,}.*\n)*)", text, re.MULTILINE)
    assert {name for name, _ in ini} >= {"convergence", "convergence_dtypes", "convergence_engine"}
    for name, help_text in ini:
        assert "(default:" in " ".join(help_text.split()), name
    calibrate = next(block for block in options if block.startswith("--convergence-calibrate"))
    assert "one ulp" in calibrate and "permuted" not in calibrate


# ------------------------------------------------------------------------------ compare and merge
def test_compare_of_a_file_with_itself_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_file(tmp_path / "a.json", record("a"))
    assert main(["compare", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: compare {path} {path}: OLD and NEW are the same file")
    assert "fix: give the old framework's results first and the new framework's second" in err


def test_compare_of_two_identical_files_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_file(tmp_path / "a.json", record("a"))
    b = tmp_path / "b.json"
    b.write_bytes(a.read_bytes())
    assert main(["compare", str(a), str(b)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {a} and {b} have the same contents" in captured.err
    assert "PASS" in captured.out


def test_merge_with_the_output_last_says_the_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job1 = write_file(tmp_path / "job1.json", record("a"))
    job2 = write_file(tmp_path / "job2.json", record("b"))
    before = job1.read_bytes()
    output = tmp_path / "all.json"
    assert main(["merge", str(job1), str(job2), str(output)]) == 2
    err = capsys.readouterr().err
    assert f"merge: {output} does not exist, and {job1}, the first argument, is an existing file" in err
    assert f"fix: pytest-convergence merge {output} {job1} {job2}" in err
    assert job1.read_bytes() == before and not output.exists()
    assert main(["merge", str(output), str(job1), str(job2)]) == 0  # the suggested order works


def test_merge_into_one_of_its_inputs_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job1 = write_file(tmp_path / "job1.json", record("a"))
    job2 = write_file(tmp_path / "job2.json", record("b"))
    assert main(["merge", str(job1), str(job1), str(job2)]) == 2
    assert (
        "is both the output (the first argument, which merge writes) and an input" in capsys.readouterr().err
    )


def test_compare_refuses_a_negative_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["compare", "a.json", "b.json", "--final-loss-threshold", "-0.1"])
    assert exited.value.code == 2
    assert "argument --final-loss-threshold: must be a number >= 0, got -0.1" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Case and Keras's words
def test_a_case_given_dtypes_says_where_dtypes_belong() -> None:
    with pytest.raises(CaseError) as caught:
        Case.sequential(
            "c", layers=DENSE, input_shape=(1,), x=[[1.0]], y=[1.0], loss="mse", steps=3, dtypes=["float16"]
        )
    assert caught.value.field == "dtypes"
    assert "a case has no dtype" in str(caught.value)
    assert (
        caught.value.fix is not None
        and '@pytest.mark.convergence(dtypes=["float16", "float32"])' in caught.value.fix
    )


def test_a_misspelt_case_field_gets_did_you_mean() -> None:
    with pytest.raises(CaseError) as caught:
        Case.sequential("c", layers=DENSE, input_shape=(1,), x=[[1.0]], y=[1.0], loss="mse", step=3)
    assert caught.value.field == "step"
    assert "a case has no field 'step' (did you mean 'steps'?)" in str(caught.value)


def test_a_loss_dtype_alias_gets_did_you_mean() -> None:
    with pytest.raises(CaseError) as caught:
        Case.sequential(
            "c", layers=DENSE, input_shape=(1,), x=[[1.0]], y=[1.0], loss="mse", steps=3, loss_dtype="fp32"
        )
    assert "unknown loss dtype 'fp32' (did you mean 'float32'?)" in str(caught.value)


def test_first_line_keeps_the_cause_keras_gives_after_exception_encountered() -> None:
    error = ValueError(
        "Error when deserializing class 'Dense' using config={'units': 0}.\n\n"
        "Exception encountered: Received an invalid value for `units`, expected a positive integer."
    )
    assert first_line(error) == (
        "Error when deserializing class 'Dense' using config={'units': 0}. "
        "Received an invalid value for `units`, expected a positive integer."
    )


def test_snapshot_files_are_not_collected_as_doctests(pytester: pytest.Pytester) -> None:
    """pytest's default --doctest-glob (test*.txt) matches snapshot files: a damaged one used to
    stop even a plain pytest with a UnicodeDecodeError from inside pathlib."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_user="def test_nothing():\n    pass\n")
    folder = pytester.path / "__snapshots__" / "test_user"
    folder.mkdir(parents=True)
    (folder / "test_seed[float32].convergence.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    platform = pytester.path / "__snapshots_platform__" / "platform-abc" / "test_user"
    platform.mkdir(parents=True)
    (platform / "test_seed[float32].exact.txt").write_bytes(b"\xff\xfe")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "UnicodeDecodeError" not in result.stdout.str()


def test_compare_of_a_missing_file_says_how_to_make_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = write_file(tmp_path / "new.json", record("a"))
    missing = tmp_path / "old.json"
    assert main(["compare", str(missing), str(new)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the results file: no such file; make it with pytest --convergence " in err
    assert f"--convergence-results={missing}, or fix the path" in err
