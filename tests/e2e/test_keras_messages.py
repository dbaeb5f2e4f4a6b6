"""Keras's complaints, reported as the field of the case that is wrong, with a fix that works.

Real TensorFlow: the user's test file trained through ``pytester`` as a user runs it.
"""

from __future__ import annotations

import pytest

USER_TESTS = """
import pytest
from pytest_convergence import Case


def case(**changes):
    settings = dict(
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0], loss="mse", optimizer="sgd", steps=5, seed=0,
    )
    settings.update(changes)
    return Case.sequential("messages", **settings)


@pytest.mark.convergence(dtypes=["float32"])
def test_optimizer_holds_a_loss(convergence_train):
    from pytest_convergence.backend import import_keras

    keras = import_keras()[1].keras
    convergence_train(case(optimizer=keras.losses.MeanSquaredError()))


@pytest.mark.convergence(dtypes=["float32"])
def test_loss_holds_an_optimizer(convergence_train):
    from pytest_convergence.backend import import_keras

    keras = import_keras()[1].keras
    convergence_train(case(loss=keras.optimizers.SGD(0.1)))


@pytest.mark.convergence(dtypes=["float32"])
def test_x_does_not_fit_the_input(convergence_train):
    convergence_train(case(x=[[-1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))


@pytest.mark.convergence(dtypes=["float32"])
def test_metric_misspelt(convergence_train):
    convergence_train(case(metrics=["acuracy"]))


@pytest.mark.convergence(dtypes=["float32"])
def test_x_fits(convergence_train):
    convergence_train(case())
"""


def test_keras_errors_name_the_field_at_fault_and_a_working_fix(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=USER_TESTS)
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=4, passed=1)
    out = result.stdout.str()
    assert (
        "case 'messages', dtype float32, field 'optimizer': expected an optimizer, got a MeanSquaredError"
        in out
    )
    assert 'which is a loss\n  fix: pass it as loss=..., and give an optimizer: "sgd"' in out
    assert "case 'messages', dtype float32, field 'loss': expected a loss, got a SGD" in out
    assert "which is an optimizer\n  fix: pass it as optimizer=..., and give a loss" in out
    assert (
        "case 'messages', dtype float32, field 'x': x has samples of shape [3], but the model's input "
        "takes samples of shape [1]\n  fix: declare input_shape=[3]" in out
    )
    assert (
        "case 'messages', dtype float32, field 'metrics[0]': Keras does not know the metric 'acuracy' "
        "(did you mean 'accuracy'?)" in out
    )
    assert "field 'metrics'" not in out
    assert "drop float32" not in out


def test_a_spec_builder_that_cannot_be_imported_is_a_collection_error(user_suite: pytest.Pytester) -> None:
    """Found when the session collects (it will train), naming the file and field, not at the
    first run as 'the model builder raised SpecError: ...'."""
    user_suite.makefile(
        ".convergence.toml",
        **{
            "lost-builder": 'dtypes = ["float32"]\nsteps = 5\nloss = "mse"\n\n[model]\n'
            'builder = "no_such_module_xyz:build"\n\n[data]\nx = [[1.0], [2.0]]\ny = [1.0, 0.0]\n'
        },
    )
    result = user_suite.runpytest("--convergence")
    out = result.stdout.str()
    assert "ERROR collecting lost-builder.convergence.toml" in out
    assert "lost-builder.convergence.toml: model.builder: cannot import 'no_such_module_xyz'" in out
    assert "the model builder raised" not in out


def test_a_binary_snapshot_file_is_named_with_its_fix(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(
        test_user=USER_TESTS
        + """

@pytest.mark.convergence(dtypes=["float32"])
def test_binary(convergence_train, convergence_snapshot):
    assert convergence_train(case()) == convergence_snapshot
"""
    )
    folder = user_suite.path / "__snapshots__" / "test_user"
    folder.mkdir(parents=True)
    (folder / "test_binary[float32].convergence.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    result = user_suite.runpytest("--convergence", "-k", "binary")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_binary[[]float32[]].convergence.txt: not a pytest-convergence snapshot: not UTF-8 text "
            "(byte 0: invalid start byte)",
            "  fix: pytest --convergence --snapshot-update rewrites it from this run*",
        ]
    )
    assert "UnicodeDecodeError" not in result.stdout.str()
