"""The foreign-machine simulation and calibration from data, end to end with real training."""

from __future__ import annotations

import numpy as np
import pytest
from factories import hidden_suite, seed_case

from pytest_convergence.backend import train
from pytest_convergence.perturb import Perturbation
from pytest_convergence.snapshot.format import Trajectory

SUITE = hidden_suite(steps=200, dtypes=["float32"])


def test_a_simulated_machine_never_writes_snapshots(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=SUITE)
    result = user_suite.runpytest("--convergence", "--snapshot-update", "--convergence-simulate-machine=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--convergence-simulate-machine trains as another machine might*drop --snapshot-update*"]
    )
    assert not (user_suite.path / "__snapshots__").exists()


def test_a_simulated_machine_passes_its_snapshot_and_calibration_is_stored_kept_and_widens_it(
    user_suite: pytest.Pytester,
) -> None:
    """A simulated machine trains another history that its snapshot still accepts; calibration is
    stored with the snapshot, kept on updates and widens the comparison. One project for both, so
    its snapshot is trained once."""
    user_suite.makepyfile(test_user=SUITE)
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=1)
    simulated = user_suite.runpytest("--convergence", "--convergence-simulate-machine=1")
    simulated.assert_outcomes(passed=1)
    simulated.stdout.fnmatch_lines(
        ["*convergence summary (trained as another machine: --convergence-simulate-machine=1)*"]
    )
    # the perturbation is real: bit for bit, the simulated history is not the stored one
    exact = user_suite.runpytest("--convergence", "--convergence-simulate-machine=1", "--convergence-exact")
    exact.assert_outcomes(failed=1)
    exact.stdout.fnmatch_lines(["*not bit-identical*"])

    # calibration: the stored history matches; its new calibration is written all the same
    calibrated = user_suite.runpytest("--convergence", "--snapshot-update", "--convergence-calibrate=3")
    calibrated.assert_outcomes(passed=1)
    calibrated.stdout.fnmatch_lines(
        ["*convergence calibration (tolerance from data)*", "case*events*outcomes*"]
    )
    (path,) = (user_suite.path / "__snapshots__").rglob("*.convergence.txt")
    stored = Trajectory.parse(path.read_text())
    assert stored.calibrated is not None and stored.calibrated.rtol > 0
    # an update without calibration keeps what was measured
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=1)
    assert Trajectory.parse(path.read_text()).header["calibrated"] == stored.header["calibrated"]
    # a configured tolerance tighter than the measured spread is widened by it: the run passes
    tight = SUITE.replace(
        '@pytest.mark.convergence(dtypes=["float32"])',
        '@pytest.mark.convergence(dtypes=["float32"], tolerance=1e-12)',
    )
    user_suite.makepyfile(test_user=tight)
    user_suite.runpytest("--convergence", "--convergence-simulate-machine=2").assert_outcomes(passed=1)


def test_the_perturbation_nudges_every_weight_one_ulp_at_its_steps_and_nothing_else() -> None:
    case = seed_case(steps=64)
    perturbation = Perturbation(3)
    steps = perturbation.steps(case.seed, case.total_steps)
    assert steps[0] == 0 and 1 <= len(steps) - 1 <= 6 and all(0 < s < 64 for s in steps[1:])
    assert steps != Perturbation(4).steps(case.seed, 64)
    assert steps != Perturbation(3, stream="calibrate").steps(case.seed, 64)
    plain = train(case, "float32")
    nudged = train(case, "float32", perturbation=perturbation)
    assert nudged.perturbation == "" and plain.perturbation == ""  # set by the session's request
    for name, start in plain.initial_weights.items():
        start = np.asarray(start, np.float32)
        moved = np.abs(np.asarray(nudged.initial_weights[name], np.float64) - start.astype(np.float64))
        ulp = np.abs(np.spacing(start)).astype(np.float64)
        # a zero would move to a subnormal, which TensorFlow flushes to zero on CPU: it stays 0
        assert np.array_equal(moved, np.where(start == 0, 0.0, ulp)), name
    assert not np.array_equal(plain.loss, nudged.loss)
    assert np.allclose(plain.loss, nudged.loss, rtol=1e-3)


def test_cutting_the_compiled_loop_into_stretches_changes_no_bit() -> None:
    """The nudges happen between calls of the compiled loop; the cut alone must change nothing."""
    from pytest_convergence.backend.engine import Training

    case = seed_case(steps=40)
    whole = Training.prepare(case, "float32", "loop")
    whole.compile_loop()
    cut = Training.prepare(case, "float32", "loop")
    cut.compile_loop()
    assert cut.loop is not None and whole.loop is not None
    one = whole.loop.execute(None)
    paused: list[int] = []
    many = cut.loop.execute(None, pauses=[1, 7, 8, 30], on_pause=paused.append)
    assert paused == [1, 7, 8, 30]
    assert np.array_equal(one.loss, many.loss)
    assert np.array_equal(one.update_size, many.update_size)


def test_platform_snapshots_are_bit_exact_on_their_machine_and_absent_elsewhere(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(test_user=SUITE)
    option = "--convergence-platform-snapshots"
    user_suite.runpytest("--convergence", option, "--snapshot-update").assert_outcomes(passed=1)
    (golden,) = (user_suite.path / "__snapshots_platform__").rglob("*.exact.txt")
    assert golden.parent.parent.name.startswith("platform-") and golden.parent.name == "test_user"
    user_suite.runpytest("--convergence", option).assert_outcomes(passed=1)
    # one ulp elsewhere: the tolerant snapshot accepts it, this machine's golden does not
    perturbed = user_suite.runpytest("--convergence", option, "--convergence-simulate-machine=1")
    perturbed.assert_outcomes(failed=1)
    perturbed.stdout.fnmatch_lines(
        ["*on this platform (platform-*): the loss history changed (exact*", "*not bit-identical*"]
    )
    user_suite.runpytest("--convergence", "--convergence-simulate-machine=1").assert_outcomes(passed=1)
    # another machine (no golden of its fingerprint): the tolerant snapshot decides alone
    golden.rename(golden.with_name("elsewhere.exact.txt"))
    user_suite.runpytest("--convergence", option, "--convergence-simulate-machine=1").assert_outcomes(
        passed=1
    )
    # syrupy's own update never deletes another platform's golden
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=1)
    assert golden.with_name("elsewhere.exact.txt").exists()
