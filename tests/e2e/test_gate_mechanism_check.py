"""A replay that cannot set a mechanism back exactly, end to end (issue 26).

Tried on a real 2.15.1 -> 2.21.0 gate, a float64 case whose loss Keras 3 computes in float32 was
replayed with the loss dtype pinned back to float64; its history still parted, and the verdict
listed it under "Another loss class computes the loss: PinnedDtypeLoss computes it now
(BinaryCrossentropy before)": the plugin's own pinning wrapper named as the upgrade's change.

Here the two sides differ as Keras 2 and Keras 3 did, in one venv: the user's loss class has one
name in both sessions, the old one computes in float64 with arithmetic of its own (a rounding a
float32 history shows), the new one in float32 with Keras's. The first difference is the loss
dtype; the confirming replay pins float64 around the new formula, which still parts from the old
one at step 1. The verdict must say that
the replay could not set the loss back exactly, and name neither the wrapper nor a loss class
change.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from factories import KERAS_MAJOR

LOSS = '''
import keras
from keras import ops

class BinaryCrossentropy(keras.losses.Loss):
    """One class name in both sessions, as Keras's own BinaryCrossentropy across the upgrade."""
'''
OLD_LOSS = """
    def __init__(self, **kwargs):
        super().__init__(dtype="float64", **kwargs)  # the old version computed in float64

    def call(self, y_true, y_pred):  # softplus(z) - y z, and a rounding of its own
        loss = ops.mean(ops.softplus(y_pred) - ops.multiply(y_true, y_pred), axis=-1)
        return loss * (1 + 2**-20)
"""
NEW_LOSS = """
    def call(self, y_true, y_pred):
        return keras.losses.binary_crossentropy(y_true, y_pred, from_logits=True)
"""


def suite(loss_class: str) -> str:
    return (
        "import pytest\n"
        "from pytest_convergence import Case\n"
        f"{LOSS}{loss_class}\n"
        "CASE = Case.sequential(\n"
        '    "pinned",\n'
        '    layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(2,),\n'
        "    x=[[-1.0, 0.5], [1.0, -0.25], [0.5, 0.75], [-0.3, -0.9]], y=[[1.0], [0.0], [1.0], [0.0]],\n"
        "    loss=BinaryCrossentropy(),\n"
        '    optimizer={"class_name": "RMSprop", "config": {"learning_rate": 0.01}},\n'
        "    steps=20, seed=0,\n"
        ")\n\n"
        '@pytest.mark.convergence(dtypes=["float32"])\n'
        "def test_case(convergence_train):\n"
        "    convergence_train(CASE)\n"
    )


def cli(pytester: pytest.Pytester, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_convergence.cli", *arguments],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def replay(pytester: pytest.Pytester, plan: str, *extra: str) -> None:
    done = cli(pytester, "replay", plan, "--python", sys.executable, "--log", "replays/replay.log", *extra)
    log = pytester.path / "replays" / "replay.log"
    assert done.returncode == 0, done.stdout + done.stderr + (log.read_text() if log.is_file() else "")


@pytest.mark.skipif(KERAS_MAJOR != 3, reason="a Keras 3 Loss computes in the dtype it is given")
def test_a_replay_that_cannot_pin_the_loss_back_exactly_says_so_and_names_no_wrapper(
    user_suite: pytest.Pytester,
) -> None:
    old, new = suite(OLD_LOSS), suite(NEW_LOSS)
    user_suite.makepyfile(test_user=old)
    user_suite.runpytest("--convergence", "--convergence-results=old.json").assert_outcomes(passed=1)
    user_suite.makepyfile(test_user=new)
    user_suite.runpytest("--convergence", "--convergence-results=new.json").assert_outcomes(passed=1)

    for round_name in ("localise", "confirm"):
        planned = cli(
            user_suite, "replay-plan", "old.json", "new.json", "--dir", "replays", "--round", round_name
        )
        assert planned.returncode == 0, planned.stderr
        if round_name == "localise":
            user_suite.makepyfile(test_user=old)  # each side replays in its own version
            replay(user_suite, "replays/localise-old.json")
            user_suite.makepyfile(test_user=new)
            replay(user_suite, "replays/localise-new.json")
    plan = json.loads((user_suite.path / "replays" / "confirm-new.json").read_text())
    assert [r["set_back"] for r in plan["runs"]] == [{"loss_dtype": "float64"}]
    replay(user_suite, "replays/confirm-new.json", "--results", "replays/results-confirm.json")

    # the replay's run records the user's loss, the pinned dtype as its loss dtype
    confirmed = json.loads((user_suite.path / "replays" / "results-confirm.json").read_text())["runs"][0]
    assert confirmed["set_back"] == {"loss_dtype": "float64"}
    assert confirmed["loss_ran"].startswith("test_user.BinaryCrossentropy ")
    assert confirmed["loss_dtype"] == "float64"

    compared = cli(
        user_suite, "compare", "old.json", "new.json", "--replays", "replays", "--markdown", "v.md"
    )
    assert compared.returncode == 1, compared.stderr
    output = compared.stdout + (user_suite.path / "v.md").read_text()
    assert "PinnedDtypeLoss" not in output and "pytest_convergence" not in output
    assert "Another loss class" not in output and "computes it now" not in output
    pytest.LineMatcher(compared.stdout.splitlines()).fnmatch_lines(
        [
            "why: pinned [[]float32[]]: first difference: the loss at step 1, with equal weights, batch and "
            "output (* -> *): a float32 model's loss is computed in float32 now (float64 before). "
            "Replay: with the loss dtype set back to float64, the histories still part (from step 1, as "
            "before): the loss at step 1 still differs, with equal weights, batch and output (* -> *), "
            "computed in float64 on both sides: the replay pins the dtype around the new version's own "
            "loss, which need not compute as the old version's did, so it cannot confirm more",
            "mechanisms: 1 explain the 1 changed cases",
            "  1. The loss is computed in float32 now, in float64 before: *(1): pinned [[]float32[]]",
        ]
    )
    assert "MechanismFactWarning" not in compared.stderr, compared.stderr
