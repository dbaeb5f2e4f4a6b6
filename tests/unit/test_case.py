"""Validation of cases, expectations and dtype names: every mistake is a CaseError saying where.

No TensorFlow: a case is checked on construction, before anything is built or trained.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pytest_convergence.case import Case, Expectation
from pytest_convergence.dtypes import DEFAULT_DTYPES, DTYPES, dtype_info, parse_dtype_list
from pytest_convergence.errors import CaseError
from pytest_convergence.outcome import Outcome

VALID_DTYPES = "float16, bfloat16, float32, float64, mixed_float16, mixed_bfloat16"
X = np.linspace(-1.0, 1.0, 100).reshape(100, 1)
Y = (X[:, 0] > 0).astype("float32")


def builder(dtype: str) -> Any:
    raise AssertionError("validation must not build the model")


def make_case(**changes: Any) -> Case:
    settings: dict[str, Any] = {"name": "tiny", "model": builder, "x": X, "y": Y, "loss": "mse", "steps": 10}
    settings.update(changes)
    return Case(**settings)


def assert_case_error(error: CaseError, field: str, *fragments: str, case: str = "tiny") -> None:
    message = str(error)
    assert error.case == case
    assert error.field == field
    assert message.startswith(f"case {case!r}, field {field!r}: "), message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------------- bad cases
BAD_CASES = [
    pytest.param({"steps": 0}, "steps", ["must be a positive integer, got 0"], id="steps-zero"),
    pytest.param({"steps": -5}, "steps", ["got -5"], id="steps-negative"),
    pytest.param({"steps": 2.5}, "steps", ["positive integer, got 2.5"], id="steps-float"),
    pytest.param({"steps": True}, "steps", ["positive integer, got True"], id="steps-bool"),
    pytest.param({"steps": None}, "steps", ["give exactly one of steps", "or epochs"], id="neither"),
    pytest.param({"epochs": 3}, "steps", ["give exactly one of steps"], id="both"),
    pytest.param({"steps": None, "epochs": 0}, "epochs", ["positive integer, got 0"], id="epochs-zero"),
    pytest.param({"batch_size": 0}, "batch_size", ["positive integer, got 0"], id="batch-zero"),
    pytest.param({"y": Y[:99]}, "y", ["x has 100 samples but y has 99"], id="length-mismatch"),
    pytest.param({"x": [], "y": []}, "x", ["the data is empty"], id="empty"),
    pytest.param(
        {"x": [["a"], ["b"]], "y": [1, 0]}, "x", ["expected numbers, got dtype <U1"], id="x-strings"
    ),
    pytest.param({"y": ["yes"] * 100}, "y", ["expected numbers"], id="y-strings"),
    pytest.param({"x": [[1.0], [1.0, 2.0]], "y": [1, 0]}, "x", ["cannot be read as an array"], id="ragged"),
    pytest.param({"x": 3.0, "y": 1.0}, "x", ["rectangular array"], id="scalar"),
    pytest.param({"x": {"a": [["a"]], "b": [[1]]}, "y": [1]}, "x.a", ["expected numbers"], id="dict-strings"),
    pytest.param(
        {"engine": "jax"}, "engine", ["unknown engine 'jax'; valid engines are: loop, xla, fit"], id="engine"
    ),
    pytest.param({"x": np.where(X > 0.9, np.nan, X)}, "x", ["contains 5 NaN or Inf value(s)"], id="x-nan"),
    pytest.param({"y": np.where(Y > 0, np.inf, Y)}, "y", ["contains 50 NaN or Inf value(s)"], id="y-inf"),
    pytest.param(
        {"initial_weights": [np.ones((1, 1)), np.array([np.nan])]},
        "initial_weights[1]",
        ["must be finite numbers"],
        id="initial-weights-nan",
    ),
    pytest.param({"seed": True}, "seed", ["seed must be an integer, got True"], id="seed-bool"),
    pytest.param({"seed": 1.5}, "seed", ["got 1.5"], id="seed-float"),
    pytest.param({"shuffle": "yes"}, "shuffle", ["true or false"], id="shuffle"),
    pytest.param({"target_loss": -0.1}, "target_loss", ["finite non-negative number"], id="target-negative"),
    pytest.param({"target_loss": math.nan}, "target_loss", ["finite non-negative"], id="target-nan"),
    pytest.param({"loss": {"config": {"from_logits": True}}}, "loss", ['"class_name"'], id="loss-no-class"),
    pytest.param({"loss": None}, "loss", ["a case needs a loss"], id="loss-none"),
    pytest.param(
        {"optimizer": {"config": {"learning_rate": 0.1}}}, "optimizer", ["class_name"], id="opt-dict"
    ),
    pytest.param(
        {"model": 42}, "model", ["builder function or a Keras model config dict, got int"], id="model"
    ),
    pytest.param(
        {"expectations": {"float16": 3}}, "expectations.float16", ["Expectation or a dict"], id="expectation"
    ),
]


@pytest.mark.parametrize(("changes", "field", "fragments"), BAD_CASES)
def test_bad_case_names_case_and_field(changes: dict[str, Any], field: str, fragments: list[str]) -> None:
    with pytest.raises(CaseError) as caught:
        make_case(**changes)
    assert_case_error(caught.value, field, *fragments)


def test_initial_weights_are_stored_as_arrays() -> None:
    case = make_case(initial_weights=[[[0.5]], [0.0]])
    assert [w.tolist() for w in case.initial_weights] == [[[0.5]], [0.0]]
    assert all(isinstance(w, np.ndarray) for w in case.initial_weights)


def test_case_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be a positive integer"):
        make_case(steps=0)


@pytest.mark.parametrize("name", ["", "   ", None])
def test_case_needs_a_name(name: Any) -> None:
    with pytest.raises(CaseError) as caught:
        make_case(name=name)
    assert caught.value.field == "name"
    assert "non-empty name" in str(caught.value)


def test_unknown_dtype_in_expectations_lists_valid_dtypes() -> None:
    with pytest.raises(CaseError) as caught:
        make_case(expectations={"float8": {"outcome": "stalled"}})
    assert caught.value.field == "expectations.float8"
    assert f"unknown dtype 'float8'; valid dtypes are: {VALID_DTYPES}" in str(caught.value)


@pytest.mark.parametrize(
    ("expectations", "field", "fragment"),
    [
        ({"float8": {"outcome": "stalled"}}, "expectations.float8", "unknown dtype 'float8'"),
        ({"float16": {"converge": True}}, "expectations.float16", "unknown expectation keyword(s) converge"),
        ({"float16": {"outcome": "exploded"}}, "expectations.float16", "unknown outcome 'exploded'"),
    ],
    ids=["dtype", "keyword", "outcome"],
)
def test_bad_expectation_in_case_names_the_case(
    expectations: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(CaseError) as caught:
        make_case(expectations=expectations)
    assert "case 'tiny'" in str(caught.value)
    assert field in str(caught.value)
    assert fragment in str(caught.value)


def test_dict_x_with_unequal_lengths_blames_x() -> None:
    with pytest.raises(CaseError) as caught:
        make_case(x={"a": X, "b": X[:50]})
    assert caught.value.case == "tiny"
    assert caught.value.field is not None and caught.value.field.startswith("x")
    assert "-1" not in str(caught.value)


# ------------------------------------------------------------------------ Case.sequential
DENSE = {"class_name": "Dense", "config": {"units": 1}}


@pytest.mark.parametrize(
    ("layers", "field"),
    [
        ([], "layers"),
        ("Dense", "layers"),
        (None, "layers"),
        ([{"config": {"units": 1}}], "layers[0]"),
        ([DENSE, "Dense"], "layers[1]"),
        ([DENSE, DENSE, {"class_name": "Dense"}, ["Dense"]], "layers[3]"),
    ],
)
def test_sequential_rejects_bad_layers(layers: Any, field: str) -> None:
    with pytest.raises(CaseError) as caught:
        Case.sequential("seq case", layers=layers, input_shape=(1,), x=X, y=Y, loss="mse", steps=3)
    assert_case_error(caught.value, field, "layer", case="seq case")


def test_sequential_builds_a_keras_config() -> None:
    case = Case.sequential(
        "my case-1", layers=[DENSE], input_shape=(3,), x=np.zeros((4, 3)), y=np.zeros(4), loss="mse", steps=2
    )
    assert case.model == {
        "class_name": "Sequential",
        "config": {
            "name": "my_case_1",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 3]}},
                {"class_name": "Dense", "config": {"units": 1}},
            ],
        },
    }
    assert case.name == "my case-1"


def test_sequential_still_validates_the_rest() -> None:
    with pytest.raises(CaseError) as caught:
        Case.sequential("seq", layers=[DENSE], input_shape=(1,), x=X, y=Y, loss="mse", steps=0)
    assert_case_error(caught.value, "steps", case="seq")


# ------------------------------------------------------------------------- step arithmetic
def fit_batch_sizes(samples: int, batch_size: int) -> list[int]:
    """The batches model.fit makes of one epoch: full ones, then a partial last one."""
    return [min(batch_size, samples - start) for start in range(0, samples, batch_size)]


@pytest.mark.parametrize(
    ("samples", "batch_size", "steps", "epochs", "batches", "total_steps", "total_epochs"),
    [
        (100, None, None, 3, 4, 12, 3),  # 32, 32, 32, 4
        (100, None, 10, None, 4, 10, 3),  # epoch 3 is cut after 2 of its 4 batches
        (64, None, None, 2, 2, 4, 2),
        (65, None, None, 2, 3, 6, 2),  # a last batch of one sample
        (10, None, 7, None, 1, 7, 7),  # fewer samples than a batch: one batch per epoch
        (100, 25, None, 1, 4, 4, 1),
        (7, 3, 5, None, 3, 5, 2),
        (2, 1, 300, None, 2, 300, 150),
    ],
)
def test_step_arithmetic_matches_fit(
    samples: int,
    batch_size: int | None,
    steps: int | None,
    epochs: int | None,
    batches: int,
    total_steps: int,
    total_epochs: int,
) -> None:
    x = np.arange(samples, dtype="float32").reshape(samples, 1)
    case = make_case(x=x, y=x[:, 0], batch_size=batch_size, steps=steps, epochs=epochs)
    assert case.num_samples == samples
    assert case.effective_batch_size == (batch_size or 32)
    assert case.batches_per_epoch == batches == len(fit_batch_sizes(samples, case.effective_batch_size))
    assert case.total_steps == total_steps
    assert case.total_epochs == total_epochs


def test_fit_batches_have_a_partial_last_batch() -> None:
    assert fit_batch_sizes(100, 32) == [32, 32, 32, 4]
    assert make_case(batch_size=None).batches_per_epoch == 4


def test_dict_inputs_count_samples() -> None:
    case = make_case(x={"a": X, "b": X[:, 0]}, epochs=2, steps=None)
    assert case.num_samples == 100
    assert case.total_steps == 8
    assert isinstance(case.x["a"], np.ndarray)


def test_data_is_stored_as_arrays() -> None:
    case = make_case(x=[[0.0], [1.0], [2.0]], y=[0, 1, 1])
    assert isinstance(case.x, np.ndarray) and case.x.shape == (3, 1)
    assert isinstance(case.y, np.ndarray) and case.y.tolist() == [0, 1, 1]


# --------------------------------------------------------------------------- expectations
def test_expectations_given_as_dicts_become_expectations() -> None:
    declared = Expectation(converged=True, final_loss_below=0.1)
    case = make_case(
        expectations={"float16": {"outcome": "stalled"}, "float32": declared, "mixed_float16": {}}
    )
    assert case.expectations["float16"] == Expectation(outcome=(Outcome.STALLED,))
    assert isinstance(case.expectations["float16"], Expectation)
    assert case.expectations["float16"].outcome == (Outcome.STALLED,)
    assert case.expectations["float32"] is declared
    assert case.expectations["mixed_float16"] == Expectation()


@pytest.mark.parametrize(
    ("outcome", "parsed"),
    [
        ("plateau", (Outcome.PLATEAU,)),
        (Outcome.DIVERGED, (Outcome.DIVERGED,)),
        (["stalled", "reached-zero"], (Outcome.STALLED, Outcome.REACHED_ZERO)),
    ],
)
def test_expectation_outcome_is_a_tuple_of_outcomes(outcome: Any, parsed: tuple[Outcome, ...]) -> None:
    assert Expectation(outcome=outcome).outcome == parsed


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"outcome": "exploded"}, "outcome", "valid outcomes are: reached-zero, stalled, oscillating"),
        ({"final_loss_below": -1.0}, "final_loss_below", "finite non-negative number, got -1.0"),
        ({"final_loss_below": math.inf}, "final_loss_below", "finite non-negative"),
        ({"steps_to_target_at_most": 0}, "steps_to_target_at_most", "positive integer, got 0"),
        ({"steps_to_target_at_most": 1.5}, "steps_to_target_at_most", "positive integer, got 1.5"),
    ],
)
def test_bad_expectation_fields(kwargs: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(CaseError) as caught:
        Expectation(**kwargs)
    assert caught.value.field == field
    assert fragment in str(caught.value)


def test_expectation_outcome_converged_points_to_converged_true() -> None:
    with pytest.raises(CaseError) as caught:
        Expectation.from_kwargs({"outcome": "converged"}, where="expectations.float16")
    assert caught.value.field == "expectations.float16.outcome"
    assert caught.value.fix is not None and "converged=True" in caught.value.fix


def test_expectation_unknown_keyword_lists_valid_ones() -> None:
    with pytest.raises(CaseError) as caught:
        Expectation.from_kwargs({"final_loss": 0.1, "steps": 3})
    assert caught.value.field == "expectation"
    assert "unknown expectation keyword(s) final_loss, steps; valid ones are: converged, outcome, " in str(
        caught.value
    )


def test_expectation_zero_final_loss_is_allowed() -> None:
    assert Expectation(final_loss_below=0).final_loss_below == 0


# ------------------------------------------------------------------------------------ with_
def test_with_changes_a_copy() -> None:
    case = make_case(steps=10)
    longer = case.with_(steps=None, epochs=3, engine="xla")
    assert longer.total_steps == 12 and longer.engine == "xla"
    assert case.total_steps == 10 and case.engine is None
    assert longer.x is case.x


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"epochs": 2}, "steps"),
        ({"y": Y[:50]}, "y"),
        ({"engine": "tpu"}, "engine"),
        ({"seed": False}, "seed"),
        ({"expectations": {"float16": 1.0}}, "expectations.float16"),
    ],
)
def test_with_revalidates(changes: dict[str, Any], field: str) -> None:
    case = make_case()
    with pytest.raises(CaseError) as caught:
        case.with_(**changes)
    assert_case_error(caught.value, field)


# ---------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("float16,float32", ["float16", "float32"]),
        (" mixed_float16 , bfloat16,, ", ["mixed_float16", "bfloat16"]),
        ("float64,float16,float64", ["float64", "float16"]),
        (["float32", "float32", "mixed_bfloat16"], ["float32", "mixed_bfloat16"]),
        (("float16",), ["float16"]),
    ],
)
def test_parse_dtype_list_keeps_order_and_drops_repeats(value: Any, parsed: list[str]) -> None:
    assert parse_dtype_list(value, where="--convergence-dtypes") == parsed


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("float16,float8", f"unknown dtype 'float8'; valid dtypes are: {VALID_DTYPES}"),
        (["float16", "half"], "unknown dtype 'half'"),
        (["float16", 16], "unknown dtype 16"),
        ("", "the list of dtypes is empty"),
        (" , ", "the list of dtypes is empty"),
        ([], "the list of dtypes is empty"),
        (16, "expected a list of dtype names, got int"),
        (None, "expected a list of dtype names, got NoneType"),
    ],
)
def test_parse_dtype_list_rejects(value: Any, fragment: str) -> None:
    with pytest.raises(CaseError) as caught:
        parse_dtype_list(value, where="dtypes")
    assert caught.value.field == "dtypes"
    assert str(caught.value).startswith("field 'dtypes': ")
    assert fragment in str(caught.value)


def test_empty_dtype_list_suggests_valid_dtypes() -> None:
    with pytest.raises(CaseError) as caught:
        parse_dtype_list([], where="dtypes")
    assert caught.value.fix == f"name at least one of: {VALID_DTYPES}"


@pytest.mark.parametrize(
    ("name", "variable", "compute", "mixed"),
    [
        ("float16", "float16", "float16", False),
        ("bfloat16", "bfloat16", "bfloat16", False),
        ("float32", "float32", "float32", False),
        ("float64", "float64", "float64", False),
        ("mixed_float16", "float32", "float16", True),
        ("mixed_bfloat16", "float32", "bfloat16", True),
    ],
)
def test_dtype_info(name: str, variable: str, compute: str, mixed: bool) -> None:
    info = dtype_info(name)
    assert (info.name, info.variable_dtype, info.compute_dtype, info.mixed) == (
        name,
        variable,
        compute,
        mixed,
    )


@pytest.mark.parametrize("name", ["float8", "Float16", None, ["float16"]])
def test_dtype_info_rejects_unknown_names(name: Any) -> None:
    with pytest.raises(CaseError) as caught:
        dtype_info(name, where="marker dtypes")
    assert caught.value.field == "marker dtypes"
    assert f"valid dtypes are: {VALID_DTYPES}" in str(caught.value)


def test_default_dtypes_are_known() -> None:
    assert DEFAULT_DTYPES == ("float16", "float32", "float64")
    assert set(DEFAULT_DTYPES) <= set(DTYPES)
