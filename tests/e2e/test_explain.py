"""The ``pytest-convergence explain`` command: one spec, one dtype, what happened and why."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import KERAS_MAJOR, seed_spec

from pytest_convergence.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

SEED_SPEC = seed_spec(
    """name = "seed"
dtypes = ["float32", "float16"]
steps = 40
seed = 0
""",
    """
[expect.float16]
outcome = "stalled"
""",
)


@pytest.fixture
def seed_spec(tmp_path: Path) -> Path:
    path = tmp_path / "seed.convergence.toml"
    path.write_text(SEED_SPEC, encoding="utf-8")
    return path


def test_explain_prints_the_run_the_diagnosis_and_the_evidence_and_plots_it(
    seed_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "plots" / "seed-float16.png"
    code = main(["explain", str(seed_spec), "--dtype", "float16", "--steps", "300", "--plot", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert re.fullmatch(
        r"seed in float16 \(loop engine\): 300 steps in [\d.]+ s \([\d,]+ steps/s\)", lines[0]
    )
    # Keras 3 computes a float16 model's loss in float32; Keras 2 in float16
    computed = "float32" if KERAS_MAJOR == 3 else "float16"
    assert (
        lines[1] == f"weights in float16, loss computed in {computed}; optimizer RMSprop(learning_rate=2.55)"
    )
    assert lines[2].startswith("final loss ")
    # the diagnosis line and the rest of its story, then its evidence, one "key: value" per line
    # (the weights one line each under "weights:")
    diagnosis = next(line for line in lines if line.startswith("float16: "))
    assert re.match(r"float16: descending from step \d+ at loss [\d.e+-]+: still falling", diagnosis)
    assert "what would change it: more steps" in lines
    evidence = lines[lines.index("evidence:") + 1 : lines.index("expectation: NOT met") - 1]
    assert evidence, "the evidence is listed"
    assert all(re.fullmatch(r"  \w+: .+|  weights:|    name: .+", line) for line in evidence), evidence
    assert "  window_start_step: " + diagnosis.split("from step ")[1].split()[0] in evidence
    # the spec's expectation for the dtype is judged, without failing the command
    assert "  - expected outcome stalled, got descending" in lines
    assert lines[-1] == f"plot: {png}"
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5_000
    assert [path.name for path in png.parent.iterdir()] == [png.name], "no temporary file left behind"


def test_explain_defaults_to_the_spec_dtype_and_budget_and_says_when_expectations_are_met(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "seed.convergence.toml"
    spec.write_text(SEED_SPEC + '\n[expect.float32]\noutcome = "descending"\n', encoding="utf-8")
    assert main(["explain", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed in float32 (loop engine): 40 steps in ")
    assert "\nexpectation: met\n" in out
    assert "plot:" not in out


def test_explain_with_the_fit_engine(seed_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(seed_spec), "--dtype", "float32", "--engine", "fit", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed in float32 (fit engine): 3 steps in ")
    assert "\nevidence:\n" in out


def test_explain_a_spec_whose_model_is_a_builder_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the builder's folder is put on sys.path
    module = "explain_builder_module"
    (tmp_path / f"{module}.py").write_text(
        "import keras\n"
        "def build(dtype):\n"
        "    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, name='unit')], name='built')\n"
    )
    spec = tmp_path / "built.convergence.toml"
    spec.write_text(
        SEED_SPEC.replace(
            '[model]\ninput_shape = [1]\nlayers = [{ class_name = "Dense", config = { units = 1 } }]',
            f'[model]\nbuilder = "{module}:build"',
        )
    )
    try:
        assert main(["explain", str(spec), "--dtype", "float16", "--steps", "5"]) == 0
    finally:
        sys.modules.pop(module, None)
    out = capsys.readouterr().out
    assert out.startswith("seed in float16 (loop engine): 5 steps")
    assert "weights in float16" in out


def test_explain_a_spec_whose_model_is_a_whole_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "config.convergence.toml"
    spec.write_text(
        SEED_SPEC.replace(
            '[model]\ninput_shape = [1]\nlayers = [{ class_name = "Dense", config = { units = 1 } }]',
            '[model.config]\nclass_name = "Sequential"\n[model.config.config]\nname = "whole"\nlayers = [\n'
            '  { class_name = "InputLayer", config = { shape = [1] } },\n'
            '  { class_name = "Dense", config = { units = 3, activation = "tanh" } },\n'
            '  { class_name = "Dense", config = { units = 1 } },\n]',
        )
    )
    assert main(["explain", str(spec), "--dtype", "float64", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed in float64 (loop engine): 5 steps")
    assert "weights in float64" in out


def test_a_missing_spec_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.convergence.toml"
    assert main(["explain", str(missing), "--dtype", "float16"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {missing}: cannot read the file")
    assert err.endswith("\n") and err.count("\n") == 1


def test_an_unknown_dtype_is_a_one_line_error_before_training(
    seed_spec: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", str(seed_spec), "--dtype", "float17"]) == 2
    out, err = capsys.readouterr()
    assert out == "", "nothing was trained"
    assert err.startswith("error: ")
    assert "--dtype" in err
    assert "unknown dtype 'float17'; valid dtypes are: float16, bfloat16, float32, float64" in err
    assert err.count("\n") == 1


def test_a_broken_spec_is_a_one_line_error_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "broken.convergence.toml"
    spec.write_text(SEED_SPEC.replace('outcome = "stalled"', 'outcom = "stalled"'))
    assert main(["explain", str(spec)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: {spec}: expect.float16.outcom: unknown key 'outcom' (did you mean 'outcome'?); "
        "valid keys: converged, outcome, final_loss_below, steps_to_target_at_most, raises, metrics\n"
    )


def test_a_negative_step_budget_is_an_error(seed_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(seed_spec), "--steps", "-5"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and "must be a positive integer, got -5" in err


def test_a_zero_step_budget_is_an_error(seed_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(seed_spec), "--dtype", "float32", "--steps", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "positive integer" in err


PYTHON_TESTS = """
import pytest
from pytest_convergence import Case

seed = Case.sequential(
    "seed-py",
    layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
    x=[[-1.0], [1.0]], y=[1.0, 0.0],
    loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
    optimizer={"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
    steps=40, seed=0,
)

@pytest.mark.convergence(dtypes=["float32", "float16"])
def test_seed(convergence_train):
    run = convergence_train(seed)
    raise AssertionError("explain stops a test at its first case: this line never runs")

def test_trains_nothing():
    pass
"""


@pytest.fixture
def python_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's Python test file, run by explain's in-process pytest (which puts its folder on
    sys.path and imports it as a module: both undone afterwards)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    path = tmp_path / "test_explained.py"
    path.write_text(PYTHON_TESTS)
    yield path
    sys.modules.pop("test_explained", None)


def test_explain_a_python_test_by_its_node_id(python_tests: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", f"{python_tests.name}::test_seed", "--dtype", "float16", "--steps", "300"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert re.fullmatch(r"seed-py in float16 \(loop engine\): 300 steps in .+", lines[0])
    assert any(re.match(r"float16: descending from step \d+", line) for line in lines)
    assert "evidence:" in lines
    assert "expectation:" not in out  # a Python test's run.expect is pytest's to run
    assert err == ""  # float16 is one of the test's dtypes: no note

    # by default, the dtype its first instance trains; a dtype it does not list is trained anyway
    assert main(["explain", f"{python_tests.name}::test_seed", "--steps", "3"]) == 0
    assert capsys.readouterr().out.startswith("seed-py in float32 (loop engine): 3 steps")
    assert (
        main(["explain", f"{python_tests.name}::test_seed[float16]", "--dtype", "float64", "--steps", "3"])
        == 0
    )
    out, err = capsys.readouterr()
    assert out.startswith("seed-py in float64 (loop engine): 3 steps")
    assert err.startswith(
        f"note: {python_tests.name}::test_seed[float16] the test trains float16, float32, not float64"
    )


def test_a_node_id_that_trains_nothing_or_names_no_test_is_a_one_line_error(
    python_tests: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", f"{python_tests.name}::test_trains_nothing"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        f"error: {python_tests.name}::test_trains_nothing: the test trained no case with "
        "convergence_train(case); fix: name a test that calls convergence_train(case)"
    )
    assert err.count("\n") == 1

    assert main(["explain", f"{python_tests.name}::test_missing"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {python_tests.name}::test_missing: no test found (")
    assert err.count("\n") == 1
