"""TF32 on TensorFlow, for real (issue 24): read and pinned in this process, and pinned by a
session's ``--convergence-tf32`` before its first training, as its results file records. This
machine has no GPU: TF32 does not apply, the setting is what changes (the unit tests give a GPU's
answers through stand-ins)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_convergence.backend import precision
from pytest_convergence.backend.frameworks import machine_fingerprint
from pytest_convergence.fingerprint import TF32_CPU

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    seed = Case.sequential(
        "seed-logistic",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
        steps=20, seed=0, engine="loop",
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_seed(convergence_train):
        convergence_train(seed)
    """
)


@pytest.fixture
def tf(tensorflow_loaded: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """TensorFlow, its TF32 switch put back as it was after the test (pinning is process-wide),
    and the environment that hands a pin on to child processes."""
    import tensorflow as tf

    monkeypatch.delenv(precision.ENVIRONMENT, raising=False)

    before = tf.config.experimental.tensor_float_32_execution_enabled()
    yield tf
    tf.config.experimental.enable_tensor_float_32_execution(before)


def test_tensorflow_is_read_and_pinned(tf: Any) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(True)  # TensorFlow's default
    assert precision.describe("tensorflow") == {
        "keras_backend": "tensorflow",
        "accelerator": "cpu",
        "tf32": TF32_CPU,
        "tf32_setting": "tensor_float_32_execution_enabled=True",
        "determinism": "off",
    }
    on_id = machine_fingerprint("tensorflow")["id"]
    off = precision.pin_tf32("tensorflow", False)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is False
    assert off["tf32_setting"] == "tensor_float_32_execution_enabled=False"
    assert off["tf32"] == TF32_CPU  # a CPU computes float32 matmuls in float32 either way
    assert machine_fingerprint("tensorflow")["id"] == on_id  # so its fingerprint is the same
    assert precision.pin_tf32("tensorflow", True)["tf32_setting"] == "tensor_float_32_execution_enabled=True"


def test_a_session_pins_tf32_before_it_trains(tf: Any, user_suite: pytest.Pytester) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(True)
    user_suite.makepyfile(test_user=SUITE)
    result = user_suite.runpytest("--convergence", "--convergence-tf32=off", "--convergence-results=r.json")
    result.assert_outcomes(passed=1)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is False  # pinned in this process
    machine = json.loads((user_suite.path / "r.json").read_text())["machine"]
    assert machine["tf32_setting"] == "tensor_float_32_execution_enabled=False"
    assert machine["tf32"] == TF32_CPU


def test_without_the_option_the_framework_keeps_its_default(tf: Any, user_suite: pytest.Pytester) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(True)
    user_suite.makeini("[pytest]\nconvergence_tf32 =\n")  # empty: the framework's own
    user_suite.makepyfile(test_user=SUITE)
    user_suite.runpytest("--convergence").assert_outcomes(passed=1)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is True
