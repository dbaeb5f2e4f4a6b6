"""A spec file names a loss or a metric of the user's own as ``package.module:Name``, from a module
beside it, as it names a builder; a name that does not import is an error naming the field."""

from __future__ import annotations

import pytest

OWN_OBJECTS = '''
import keras


class HalfBCE(keras.losses.Loss):
    """Half of BinaryCrossentropy from logits: a loss Keras does not ship."""

    def __init__(self, scale=0.5, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)

    def call(self, y_true, y_pred):
        return self.scale * self.bce(y_true, y_pred)


def abs_logit(y_true, y_pred):
    return abs(y_pred)  # per sample; Keras averages it, on Keras 2 and 3 alike
'''

SPEC = """
name = "own-objects"
dtypes = ["float32"]
steps = 30
metrics = ["own_objects:abs_logit"]

[model]
input_shape = [1]
layers = [{ class_name = "Dense", config = { units = 1 } }]

[loss]
class_name = "own_objects:HalfBCE"
config = { scale = 0.5 }

[optimizer]
class_name = "SGD"
config = { learning_rate = 0.5 }

[data]
x = [[-1.0], [1.0]]
y = [1.0, 0.0]
"""


def test_a_spec_trains_with_its_own_loss_and_metric(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(own_objects=OWN_OBJECTS)
    user_suite.makefile(".convergence.toml", own=SPEC)
    result = user_suite.runpytest("--convergence", "--snapshot-update", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["own-objects*float32*loop*30*passed"])


def test_an_own_loss_that_does_not_import_names_the_field(user_suite: pytest.Pytester) -> None:
    user_suite.makefile(".convergence.toml", own=SPEC.replace("own_objects:HalfBCE", "own_objects:Missing"))
    user_suite.makepyfile(own_objects=OWN_OBJECTS)
    result = user_suite.runpytest("--convergence", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)  # found at collection, before anything trains
    result.stdout.fnmatch_lines(
        ["*own.convergence.toml: loss.class_name: module 'own_objects' has no 'Missing'*"]
    )


def test_a_spec_weighs_its_outputs_and_a_negative_weight_is_refused(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(own_objects=OWN_OBJECTS)
    weighed = SPEC.replace("steps = 30", "steps = 30\nloss_weights = [0.5]")
    user_suite.makefile(".convergence.toml", weighed=weighed)
    user_suite.makefile(".convergence.toml", negative=weighed.replace("[0.5]", "[-1.0]"))
    result = user_suite.runpytest("--convergence", "--snapshot-update", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*negative.convergence.toml: loss_weights*"])
