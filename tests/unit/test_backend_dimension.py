"""The backend as a dimension, without a framework: which backend Keras will load, the names a
user may give, test ids, per-backend expectations in cases and spec files, the summary's column."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from factories import seed_spec

from pytest_convergence import Case
from pytest_convergence.backends import BackendDtype, BackendError, configured, label, parse
from pytest_convergence.outcome import Outcome
from pytest_convergence.plugin.summary import SummaryRow, format_table
from pytest_convergence.spec.loader import SpecError, load_spec


def test_the_backend_is_read_as_keras_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert configured() == "tensorflow"  # no keras.json: Keras's default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax", "floatx": "float32"}))
    assert configured() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # the variable wins over the file
    assert configured() == "torch"
    (tmp_path / "keras.json").write_text("{not json")
    monkeypatch.delenv("KERAS_BACKEND")
    assert configured() == "tensorflow"


def test_backend_names_are_checked_with_the_fix() -> None:
    assert parse("tensorflow, jax,jax", "--convergence-backends") == ["tensorflow", "jax"]
    assert parse(["PyTorch", "tf"], "marker") == ["torch", "tensorflow"]
    with pytest.raises(BackendError, match=r"--convergence-backends: unknown backend 'mxnet'.*\n  fix: "):
        parse("tensorflow,mxnet", "--convergence-backends")
    with pytest.raises(BackendError, match="names no backend"):
        parse(" , ", "ini convergence_backends")


def test_ids_carry_the_backend_except_tensorflows_and_the_parameter_reads_as_its_dtype() -> None:
    assert label("tensorflow", "float16") == "float16"
    assert label("jax", "mixed_float16") == "jax-mixed_float16"
    parameter = BackendDtype("float16", "jax")
    assert parameter == "float16" and str(parameter) == "float16" and parameter.backend == "jax"
    again = pickle.loads(pickle.dumps(parameter))
    assert again == "float16" and again.backend == "jax"


def test_a_backends_own_expectation_replaces_the_dtypes_there_only() -> None:
    case = Case.sequential(
        "seed",
        layers=[{"class_name": "Dense", "config": {"units": 1}}],
        input_shape=(1,),
        x=[[-1.0], [1.0]],
        y=[1.0, 0.0],
        loss="mse",
        steps=10,
        expectations={"float32": {"outcome": "descending"}, "jax-float32": {"outcome": "plateau"}},
    )
    assert case.expectation("float32").outcome == (Outcome("descending"),)  # type: ignore[union-attr]
    assert case.expectation("float32", "jax").outcome == (Outcome("plateau"),)  # type: ignore[union-attr]
    assert case.expectation("float32", "torch").outcome == (Outcome("descending"),)  # type: ignore[union-attr]
    assert case.expectation("float64", "jax") is None


def test_a_spec_file_gives_a_backends_own_expectations_under_its_name(tmp_path: Path) -> None:
    path = tmp_path / "seed.convergence.toml"
    path.write_text(
        seed_spec(
            'dtypes = ["float32"]\nsteps = 10\n',
            '\n[expect.float32]\noutcome = "descending"\n\n[expect.jax.float32]\noutcome = "plateau"\n',
        )
    )
    case = load_spec(path).case
    assert case.expectation("float32", "jax").outcome == (Outcome("plateau"),)  # type: ignore[union-attr]
    path.write_text(
        seed_spec('dtypes = ["float32"]\nsteps = 10\n', '\n[expect.jax.float16]\noutcome = "plateau"\n')
    )
    with pytest.raises(SpecError, match=r"expect\.jax\.float16.*not in dtypes"):
        load_spec(path)
    path.write_text(
        seed_spec('dtypes = ["float32"]\nsteps = 10\n', '\n[expect.mxnet.float32]\noutcome = "plateau"\n')
    )
    with pytest.raises(SpecError, match=r"'mxnet' is not one of: .*jax, torch"):
        load_spec(path)


def _row(backend: str) -> SummaryRow:
    return SummaryRow(
        "seed", "float32", "loop", "descending", 0.01, 50, 1000.0, None, "passed", backend=backend
    )


def test_the_summary_shows_a_backend_column_once_a_run_is_not_tensorflows() -> None:
    tensorflow_only = format_table([_row("tensorflow")])
    assert "backend" not in tensorflow_only[0]
    both = format_table([_row("tensorflow"), _row("jax")])
    assert both[0].split()[:4] == ["case", "dtype", "backend", "engine"]
    assert both[3].split()[:4] == ["seed", "float32", "jax", "loop"]
