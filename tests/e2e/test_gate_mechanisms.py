"""The gate names the mechanism of a change, end to end: one hand-made difference per stage of a
step (the initial weights, the batch, the loss, the optimizer's update), each made in a user's
suite between two sessions and attributed by the verdict's ``why:`` line; then the replays that
confirm a mechanism by setting it back, and that localise a difference the first steps miss.

Each user suite trains one tiny model for tens of steps in float32. The replay commands run a
pytest session in a subprocess from the current directory, as the gate runs them, so they run in
the pytester directory (the results files' test ids are relative to it) with this interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from factories import KERAS_MAJOR

from pytest_convergence.anatomy import Anatomy

X = [[-1.0, 0.5], [1.0, -0.25], [0.5, 0.75], [-0.3, -0.9]]
Y = [1.0, 0.0, 1.0, 0.0]
"""Four samples, two features: a float64 loss of this data rounds to another float32 than the
float32 loss at step 1 (two samples of one feature round alike there in Keras 3)."""

DEFAULTS = {
    "layers": '[{"class_name": "Dense", "config": {"units": 1}}]',
    "input_shape": "(2,)",
    "x": repr(X),
    "y": repr(Y),
    "loss": '{"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}',
    "optimizer": '{"class_name": "RMSprop", "config": {"learning_rate": 0.01}}',
    "steps": "20",
    "seed": "0",
}


def suite(name: str, preamble: str = "", **settings: str | None) -> str:
    """A user's test module of one case trained in float32; ``settings`` are the Case's keyword
    arguments as Python source, over :data:`DEFAULTS` (None leaves one out)."""
    arguments = {**DEFAULTS, **settings}
    lines = "".join(f"    {key}={value},\n" for key, value in arguments.items() if value is not None)
    return (
        "import pytest\n"
        "import tensorflow as tf\n"
        "from pytest_convergence import Case\n"
        f"{preamble}\n"
        f"CASE = Case.sequential(\n    {name!r},\n{lines})\n\n"
        '@pytest.mark.convergence(dtypes=["float32"])\n'
        "def test_case(convergence_train):\n"
        "    convergence_train(CASE)\n"
    )


ANATOMY = "--convergence-anatomy=3"
"""Results files record no step anatomy by default (the gate's replay takes changed cases apart):
these sessions record the first three steps, as a team that compares files without replays does."""


def old_session(pytester: pytest.Pytester, old: str) -> None:
    pytester.makepyfile(test_user=old)
    pytester.runpytest("--convergence", "--convergence-results=old.json", ANATOMY).assert_outcomes(passed=1)


def new_session(pytester: pytest.Pytester, new: str, *, gate_fails: bool = True) -> pytest.RunResult:
    """The new side, gated in session against old.json (and written to new.json)."""
    pytester.makepyfile(test_user=new)
    result = pytester.runpytest(
        "--convergence", "--convergence-baseline=old.json", "--convergence-results=new.json", ANATOMY
    )
    result.assert_outcomes(passed=1)  # every test passes; the gate alone may fail the session
    assert result.ret == (pytest.ExitCode.TESTS_FAILED if gate_fails else pytest.ExitCode.OK)
    return result


def cli(pytester: pytest.Pytester, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``pytest-convergence ARGUMENTS`` as a user runs it, from the pytester directory."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_convergence.cli", *arguments],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def replay(pytester: pytest.Pytester, plan: str, *extra: str) -> None:
    done = cli(pytester, "replay", plan, "--python", sys.executable, *extra)
    log = ""
    for name in ("old.log", "new.log", "confirm.log"):
        path = pytester.path / "replays" / name
        log += path.read_text() if path.is_file() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log


def matcher(text: str) -> pytest.LineMatcher:
    return pytest.LineMatcher(text.splitlines())


def test_a_changed_initialiser_is_the_initial_weights(user_suite: pytest.Pytester) -> None:
    def layers(initializer: str) -> str:
        return f'[{{"class_name": "Dense", "config": {{"units": 1, "kernel_initializer": "{initializer}"}}}}]'

    old_session(user_suite, suite("init", layers=layers("glorot_uniform")))
    result = new_session(user_suite, suite("init", layers=layers("he_normal")))
    result.stdout.fnmatch_lines(
        [
            "why: init [[]float32[]]: first difference: the initial weights of dense/kernel, before any "
            "step: the same seed draws other initial values now",
            "mechanisms: 1 explain the 1 changed cases",
            "  1. The initial weights differ: the same seed draws other values (1): init [[]float32[]]",
        ]
    )
    # the stage is measured, not guessed: the digests of step 1's starting kernel differ, its bias not
    old, new = (
        Anatomy.from_json(json.loads((user_suite.path / name).read_text())["runs"][0]["anatomy"])
        for name in ("old.json", "new.json")
    )
    assert old.weights == new.weights == ["dense/kernel", "dense/bias"]
    assert old.weights_before[0][0] != new.weights_before[0][0]
    assert old.weights_before[0][1] == new.weights_before[0][1]
    assert old.matches_run is True and new.matches_run is True


def test_a_wider_loss_dtype_is_the_loss(user_suite: pytest.Pytester) -> None:
    old_session(user_suite, suite("pinned"))
    result = new_session(user_suite, suite("pinned", loss_dtype='"float64"'))
    result.stdout.fnmatch_lines(
        [
            "why: pinned [[]float32[]]: first difference: the loss at step 1, with equal weights, batch "
            "and output (* -> *): the loss is computed in float64 now (float32 before)",
            "note: pinned [[]float32[]]: configuration: loss dtype float32 -> float64",
            "  1. The loss is computed in float64 now, in the output's dtype before (1): "
            "pinned [[]float32[]]",
        ]
    )
    # the standalone command reads the same two files to the same sentence
    compared = cli(user_suite, "compare", "old.json", "new.json")
    assert compared.returncode == 1, compared.stderr
    matcher(compared.stdout).fnmatch_lines(
        ["why: pinned [[]float32[]]: first difference: the loss at step 1, *(float32 before)"]
    )


# Keras 3's RMSprop divides lr * gradient by sqrt(velocity + epsilon). The increment's formula
# below is the same number computed in float64 and rounded once. (Multiplying by rsqrt instead
# is no change at all: TensorFlow's graph optimiser rewrites x / sqrt(y) into x * rsqrt(y), so
# that variant trains bit for bit as the stock optimizer.)
RMSPROP = '''
import keras
from keras import ops

class RMSprop(keras.optimizers.RMSprop):
    """The same class name in both sessions; only the new one computes its increment otherwise."""
'''
ROUNDED_ONCE = """
    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        velocity = self._velocities[self._get_variable_index(variable)]
        square = ops.multiply(1 - self.rho, ops.square(gradient))
        self.assign(velocity, ops.add(ops.multiply(self.rho, velocity), square))
        wide = [ops.cast(v, "float64") for v in (lr, gradient, ops.add(velocity, self.epsilon))]
        increment = ops.divide(ops.multiply(wide[0], wide[1]), ops.sqrt(wide[2]))
        self.assign_sub(variable, ops.cast(increment, variable.dtype))
"""


@pytest.mark.skipif(
    KERAS_MAJOR != 3,
    reason="overrides Keras 3's RMSprop.update_step(gradient, variable, learning_rate); Keras 2's "
    "optimizers have another update_step and a legacy class for optimizer dicts",
)
def test_another_rounding_of_the_same_optimizer_class_is_the_update(user_suite: pytest.Pytester) -> None:
    four = {
        "layers": '[{"class_name": "Dense", "config": {"units": 4}}]',
        "y": repr([[v] * 4 for v in Y]),
        "optimizer": "RMSprop(learning_rate=0.37)",
    }
    old_session(user_suite, suite("rmsprop", RMSPROP + "    pass\n", **four))
    # a rounding apart: within the history's tolerance, the case passes, and is still explained
    result = new_session(user_suite, suite("rmsprop", RMSPROP + ROUNDED_ONCE, **four), gate_fails=False)
    result.stdout.fnmatch_lines(
        [
            "rmsprop*float32*descending -> descending*pass",
            "why: rmsprop [[]float32[]]: first difference: the optimizer's update of dense/kernel at "
            "step 1 (gradients equal): RMSprop's arithmetic changed",
            "  1. RMSprop's update is computed differently (same gradients, other weights) (1): "
            "rmsprop [[]float32[]]",
            "verdict: PASS (0 of 1 failed)",
        ]
    )
    new = json.loads((user_suite.path / "new.json").read_text())["runs"][0]
    assert new["anatomy"]["configuration"]["optimizer"] == "test_user.RMSprop"
    result.stdout.no_fnmatch_line("*settings changed*")


def test_shuffling_turned_on_is_the_batch(user_suite: pytest.Pytester) -> None:
    batches = {"steps": None, "epochs": "3", "batch_size": "2"}  # 2 batches an epoch, 6 steps
    old_session(user_suite, suite("shuffled", shuffle="False", **batches))
    result = new_session(user_suite, suite("shuffled", shuffle="True", **batches))
    result.stdout.fnmatch_lines(
        [
            "why: shuffled [[]float32[]]: first difference: the batch at step 1, with equal weights: "
            "the shuffle gives * now (off before)",
            "note: shuffled [[]float32[]]: configuration: shuffling off -> *",
            "  1. Shuffling: off before, * now (1): shuffled [[]float32[]]",
        ]
    )


def test_a_replay_confirms_the_loss_dtype(user_suite: pytest.Pytester) -> None:
    old, new = suite("pinned"), suite("pinned", loss_dtype='"float64"')
    old_session(user_suite, old)
    new_session(user_suite, new)
    planned = cli(
        user_suite, "replay-plan", "old.json", "new.json", "--dir", "replays", "--round", "localise"
    )
    assert planned.returncode == 0, planned.stderr
    matcher(planned.stdout).fnmatch_lines(
        [
            "replays/localise-old.json: 1 runs to replay on the old side",
            "replays/localise-new.json: 0 runs to replay on the new side",
        ]
    )
    user_suite.makepyfile(test_user=old)  # each side replays in its own version
    replay(user_suite, "replays/localise-old.json", "--log", "replays/old.log")
    user_suite.makepyfile(test_user=new)
    replay(user_suite, "replays/localise-new.json", "--log", "replays/new.log")
    kept = Anatomy.load(user_suite.path / "replays" / "anatomy-old" / "pinned[float32].npz")
    # nothing set back: the replay took the steps apart without training the run again, and its
    # losses are the results file's at every checkpoint
    assert kept.first_step == 1 and len(kept.loss) == 20 and kept.matches_run is None
    recorded = json.loads((user_suite.path / "old.json").read_text())["runs"][0]
    assert kept.check_checkpoints(recorded["checkpoint_steps"], recorded["checkpoint_losses"]) is True

    planned = cli(user_suite, "replay-plan", "old.json", "new.json", "--dir", "replays", "--round", "confirm")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads((user_suite.path / "replays" / "confirm-new.json").read_text())
    assert [(r["case"], r["set_back"]) for r in plan["runs"]] == [("pinned", {"loss_dtype": "float32"})]
    replay(
        user_suite,
        "replays/confirm-new.json",
        "--results",
        "replays/results-confirm.json",
        "--log",
        "replays/confirm.log",
    )
    confirmed = json.loads((user_suite.path / "replays" / "results-confirm.json").read_text())
    assert [(r["case"], r["set_back"]) for r in confirmed["runs"]] == [("pinned", {"loss_dtype": "float32"})]

    compared = cli(user_suite, "compare", "old.json", "new.json", "--replays", "replays")
    assert compared.returncode == 1, compared.stderr  # confirmed, and still a changed case
    matcher(compared.stdout).fnmatch_lines(
        [
            "why: pinned [[]float32[]]: first difference: the loss at step 1, * (float32 before). "
            "Confirmed by replay: with the loss dtype set back to float32, the new version trains bit "
            "for bit as the old one (20 checkpoints and the final weights equal)",
            "verdict: FAIL (1 of 1 failed)",
        ]
    )


def test_a_late_difference_is_localised_by_the_replays(user_suite: pytest.Pytester) -> None:
    """The rate drops after 10 steps in the new session: steps 1-3 are bit-identical, so the
    results files cannot say why; the replays take apart every step up to the parting one."""
    schedule = "tf.keras.optimizers.schedules.PiecewiseConstantDecay([10], [0.01, 0.001])"
    old = suite("late", optimizer="tf.keras.optimizers.RMSprop(learning_rate=0.01)", steps="40")
    new = suite("late", optimizer=f"tf.keras.optimizers.RMSprop(learning_rate={schedule})", steps="40")
    old_session(user_suite, old)
    result = new_session(user_suite, new)
    result.stdout.fnmatch_lines(
        [
            "why: late [[]float32[]]: not localised: steps 1-3 are bit-identical on both sides and the "
            "histories part at step 13; the gate's replay takes every step up to it apart",
            "  1. Not localised (1): late [[]float32[]]",
        ]
    )

    planned = cli(
        user_suite, "replay-plan", "old.json", "new.json", "--dir", "replays", "--round", "localise"
    )
    assert planned.returncode == 0, planned.stderr
    for side in ("old", "new"):
        plan = json.loads((user_suite.path / "replays" / f"localise-{side}.json").read_text())
        assert [(r["case"], r["last_step"], r["set_back"]) for r in plan["runs"]] == [("late", 13, {})]
    user_suite.makepyfile(test_user=old)
    replay(user_suite, "replays/localise-old.json", "--log", "replays/old.log")
    user_suite.makepyfile(test_user=new)
    replay(user_suite, "replays/localise-new.json", "--log", "replays/new.log")
    for side in ("old", "new"):
        kept = Anatomy.load(Path(user_suite.path, "replays", f"anatomy-{side}", "late[float32].npz"))
        assert (kept.first_step, kept.last_step, kept.matches_run) == (1, 13, None)
        recorded = json.loads((user_suite.path / f"{side}.json").read_text())["runs"][0]
        assert kept.check_checkpoints(recorded["checkpoint_steps"], recorded["checkpoint_losses"]) is True

    compared = cli(user_suite, "compare", "old.json", "new.json", "--replays", "replays")
    assert compared.returncode == 1, compared.stderr
    matcher(compared.stdout).fnmatch_lines(
        [
            "why: late [[]float32[]]: first difference: the optimizer's update of dense/kernel at step 12 "
            "(gradients equal): RMSprop's settings changed (learning_rate * -> *PiecewiseConstantDecay*)",
        ]
    )
    assert "not localised" not in compared.stdout


def test_results_files_record_no_anatomy_by_default_and_the_replay_localises(
    user_suite: pytest.Pytester,
) -> None:
    """A results file costs no second training per run: no steps are taken apart unless asked.
    The gate's replay round then takes the changed case apart on both sides and names it."""
    old = suite("init", layers='[{"class_name": "Dense", "config": {"units": 1}}]')
    new = suite(
        "init", layers='[{"class_name": "Dense", "config": {"units": 1, "kernel_initializer": "he_normal"}}]'
    )
    user_suite.makepyfile(test_user=old)
    user_suite.runpytest("--convergence", "--convergence-results=old.json").assert_outcomes(passed=1)
    user_suite.makepyfile(test_user=new)
    result = user_suite.runpytest(
        "--convergence", "--convergence-baseline=old.json", "--convergence-results=new.json"
    )
    result.stdout.fnmatch_lines(
        ["why: init [[]float32[]]: not localised: no step anatomy recorded on either side *"]
    )
    for side in ("old", "new"):
        assert json.loads((user_suite.path / f"{side}.json").read_text())["runs"][0]["anatomy"] == {}

    planned = cli(
        user_suite, "replay-plan", "old.json", "new.json", "--dir", "replays", "--round", "localise"
    )
    assert planned.returncode == 0, planned.stderr
    user_suite.makepyfile(test_user=old)
    replay(user_suite, "replays/localise-old.json", "--log", "replays/old.log")
    user_suite.makepyfile(test_user=new)
    replay(user_suite, "replays/localise-new.json", "--log", "replays/new.log")
    compared = cli(user_suite, "compare", "old.json", "new.json", "--replays", "replays")
    matcher(compared.stdout).fnmatch_lines(
        [
            "why: init [[]float32[]]: first difference: the initial weights of dense/kernel, before any "
            "step: the same seed draws other initial values now",
        ]
    )
