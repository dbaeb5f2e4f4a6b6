"""What a user reads of a real (multi-batch) run: epoch-mean losses as History has them, metric
expectations, validation declared as fit takes it, and a summary row for every run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from factories import make_run, seed_case

from pytest_convergence import CaseError
from pytest_convergence.case import Expectation, MetricCondition
from pytest_convergence.diagnosis.expectations import unmet
from pytest_convergence.plugin.summary import SummaryRow, format_table


def multi_batch_run(**changes: object) -> object:
    """4 batches an epoch; the very last batch's loss is exactly 0 while the epoch's mean is 0.3."""
    settings: dict[str, object] = {
        "loss": [0.9, 0.6, 0.5, 0.4, 0.5, 0.4, 0.3, 0.0],
        "steps_per_epoch": 4,
        "target_loss": 0.1,
        "epoch_metrics": {"loss": [0.6, 0.3], "val_accuracy": [0.5, 0.75], "val_loss": [0.7, 0.45]},
    }
    settings.update(changes)
    return make_run(**settings)  # type: ignore[arg-type]


def test_a_multi_batch_run_whose_last_batch_has_loss_0_is_judged_on_its_epoch_mean() -> None:
    run = multi_batch_run()
    assert run.judged_on_epochs and run.final_loss_kind == "epoch mean"
    assert run.final_loss == 0.3 and run.final_step_loss == 0.0
    assert not run.converged  # the epoch's mean is above the target, though one batch reached 0
    assert run.steps_to(0.1) is None
    assert run.steps_to(0.35) == 8  # the end of the first epoch whose mean is at or below it
    problems = unmet(run.history, Expectation(converged=True))
    assert problems == ["expected to converge (final loss <= 0.1), final loss 0.3; target never reached"]


def test_a_single_batch_run_is_judged_on_its_steps() -> None:
    run = make_run([0.5, 0.2, 0.05], target_loss=0.1)
    assert not run.judged_on_epochs and run.final_loss_kind == "step"
    assert run.final_loss == 0.05 and run.converged and run.steps_to(0.1) == 3


def test_epoch_judgement_reaches_the_target_at_the_end_of_the_epoch() -> None:
    run = multi_batch_run(epoch_metrics={"loss": [0.6, 0.05]})
    assert run.converged and run.steps_to_target == 8 and run.final_loss == 0.05


@pytest.mark.parametrize(
    ("conditions", "problems"),
    [
        (["val_accuracy >= 0.7"], []),
        (["val_accuracy > 0.75"], ["expected val_accuracy > 0.75 (final epoch), got val_accuracy = 0.75"]),
        ({"val_loss": "<= 0.5", "loss": "< 0.31"}, []),
        (["val_loss <= 0.4"], ["expected val_loss <= 0.4 (final epoch), got val_loss = 0.45"]),
        (
            ["val_acc >= 0.7"],
            [
                "expected val_acc >= 0.7: no metric 'val_acc' was recorded; this run recorded: "
                "loss, val_accuracy, val_loss"
            ],
        ),
    ],
)
def test_metric_expectations_judge_the_final_epoch(conditions: object, problems: list[str]) -> None:
    run = multi_batch_run()
    assert unmet(run.history, Expectation.from_kwargs({"metrics": conditions})) == problems


@pytest.mark.parametrize(
    "text", ["val_accuracy => 0.7", "val_accuracy >= high", "val_accuracy>=0.7", "accuracy >= inf", ""]
)
def test_a_metric_condition_that_cannot_be_read_says_how_to_write_one(text: str) -> None:
    with pytest.raises(CaseError) as caught:
        Expectation.from_kwargs({"metrics": [text]})
    assert caught.value.field == "metrics[0]"
    assert "val_accuracy >= 0.7" in (caught.value.fix or "")


def test_metric_conditions_read_and_print_as_written() -> None:
    condition = MetricCondition.parse("val_loss <= 0.25")
    assert (condition.name, condition.op, condition.value) == ("val_loss", "<=", 0.25)
    assert str(condition) == "val_loss <= 0.25" and condition.holds(0.25) and not condition.holds(0.3)


def test_a_validation_split_holds_out_the_tail_as_fit_does() -> None:
    x = np.arange(10.0).reshape(10, 1)
    case = seed_case(x=x, y=np.arange(10.0), validation_split=0.25, batch_size=4)
    # fit cuts at floor(10 * 0.75) = 7, before shuffling
    assert case.fit_x.shape == (7, 1) and case.num_samples == 7 and case.batches_per_epoch == 2
    validation = case.validation
    assert validation is not None and np.array_equal(validation[0].ravel(), [7.0, 8.0, 9.0])


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"validation_split": 0.0}, "validation_split", "between 0 and 1"),
        ({"validation_split": 1.5}, "validation_split", "between 0 and 1"),
        ({"validation_split": 0.6}, "validation_split", "leaves samples on both sides"),  # 2 samples
        ({"validation_data": ([[1.0]], [1.0]), "validation_split": 0.5}, "validation_split", "not both"),
        ({"validation_data": [[1.0]]}, "validation_data", r"a pair \(x, y\)"),
        ({"validation_data": ([[1.0], [2.0]], [1.0])}, "validation_data.y", "2 samples but y has 1"),
        ({"validation_data": ([[math.nan]], [1.0])}, "validation_data.x", "NaN"),
    ],
)
def test_bad_validation_settings_name_the_field(changes: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(CaseError, match=message) as caught:
        seed_case(**changes)
    assert caught.value.field == field


def test_validation_data_is_kept_as_arrays() -> None:
    case = seed_case(validation_data=([[-1.0], [1.0]], [1.0, 0.0]))
    assert case.validation is not None and case.fit_x is case.x
    assert isinstance(case.validation[0], np.ndarray) and case.validation[0].shape == (2, 1)


def test_the_summary_shows_what_the_final_loss_is_and_a_row_for_a_run_that_errored() -> None:
    rows = [
        SummaryRow.from_run(multi_batch_run(), "passed"),
        SummaryRow.from_run(make_run([0.5, 0.2]), "passed"),
        SummaryRow.failed_to_train("broken", "float16", "fit", 30),
    ]
    lines = format_table(rows)
    assert lines[0].split() == [
        "case",
        "dtype",
        "engine",
        "outcome",
        "final",
        "loss",
        "of",
        "steps",
        "steps/s",
        "trace",
        "s",
        "other",
        "s",
        "target",
        "test",
    ]
    assert " 0.3  epoch " in lines[2] and " 0.2  step " in lines[3]
    assert lines[4].split()[:6] == ["broken", "float16", "fit", "error", "-", "-"]
    assert lines[4].split()[-1] == "error"
    assert lines[-2].startswith("final loss: History's mean of the last epoch")
    # the multi-batch run reaches 0 at its last step: another machine may not, and the row says so
    assert "reached-zero (borderline: descending)" in lines[2]
    assert lines[-1].startswith("borderline: the outcome's deciding quantity is within")


def test_a_loss_per_output_is_accepted_and_checked_per_output() -> None:
    case = seed_case(loss={"first": "mse", "second": {"class_name": "BinaryCrossentropy", "config": {}}})
    assert set(case.loss) == {"first", "second"}
    with pytest.raises(CaseError) as caught:
        seed_case(loss={"first": "mse", "second": {"config": {}}})
    assert caught.value.field == "loss" and "a loss per output" in (caught.value.fix or "")
