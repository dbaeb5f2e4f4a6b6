"""Calibration without TensorFlow: the perturbation is one ulp, the recommendation is what compare needs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from factories import make_run

from pytest_convergence.perturb import one_ulp_away
from pytest_convergence.snapshot.calibrate import MARGIN, calibrate
from pytest_convergence.snapshot.compare import compare
from pytest_convergence.snapshot.format import Trajectory
from pytest_convergence.tolerance import Tolerance


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_each_initial_weight_moves_exactly_one_unit_in_the_last_place(dtype: str) -> None:
    weights = np.array([[-4.0, 0.3, 1e-3], [2.5, -0.7, 10.0]], dtype)
    moved = one_ulp_away(weights, dtype, np.random.default_rng(0)).astype(dtype)
    gap = np.abs(moved.astype(np.float64) - weights.astype(np.float64))
    up = np.abs(np.nextafter(weights, np.inf).astype(np.float64) - weights.astype(np.float64))
    down = np.abs(np.nextafter(weights, -np.inf).astype(np.float64) - weights.astype(np.float64))
    assert np.all((gap == up) | (gap == down))
    assert np.all(gap > 0)


def test_bfloat16_weights_move_by_their_eight_bit_spacing() -> None:
    weights = np.array([1.5, -3.0, 0.25], np.float32)
    moved = one_ulp_away(weights, "bfloat16", np.random.default_rng(1))
    assert np.allclose(np.abs(moved - weights), [2.0**-7, 2.0**-6, 2.0**-9])


def _stored(run, rtol: float) -> Trajectory:
    return Trajectory.parse(Trajectory.from_run(run, Tolerance(rtol=rtol)).render())


def test_the_recommended_rtol_accepts_every_rerun_and_a_tenth_of_it_does_not() -> None:
    steps = np.arange(1, 2001, dtype=np.float64)
    base = make_run(1.0 / steps, update_size=np.full(2000, 1e-3))
    others = [
        make_run((1.0 / steps) * (1 + 3e-4 * np.sin(steps / 50.0 + k)), update_size=np.full(2000, 1e-3))
        for k in range(3)
    ]
    calibration = calibrate(base, others, current_rtol=1e-4, miss_fraction=0.01)
    assert calibration.runs == 4
    assert 3e-4 < calibration.recommended_rtol < 2e-3
    assert not calibration.accepted_by_current
    accepting = Tolerance(rtol=calibration.recommended_rtol)
    for other in others:
        assert compare(_stored(base, 1e-4), _stored(other, 1e-4), accepting).ok
    too_tight = Tolerance(rtol=calibration.recommended_rtol / 10)
    assert not all(compare(_stored(base, 1e-4), _stored(o, 1e-4), too_tight).ok for o in others)


def test_reruns_that_diverge_at_other_steps_get_a_miss_share_and_a_finite_rtol() -> None:
    steps = np.arange(1, 301, dtype=np.float64)

    def diverging(at: int) -> np.ndarray:
        loss = 1.0 / steps
        loss[at:] = np.nan
        return loss

    base = make_run(diverging(200), update_size=np.full(300, 1e-3))
    other = make_run(diverging(215) * (1 + 1e-5), update_size=np.full(300, 1e-3))
    calibration = calibrate(base, [other], current_rtol=1e-2, miss_fraction=0.01)
    tolerance = calibration.tolerance()
    assert 0.01 < tolerance.miss_fraction <= 0.5
    assert np.isfinite(tolerance.rtol) and tolerance.rtol < 1e-3
    # what it recommends is what the comparison accepts
    configured = Tolerance(rtol=1e-2).widened(tolerance)
    assert compare(_stored(base, 1e-2), _stored(other, 1e-2), configured).ok
    assert not compare(_stored(base, 1e-2), _stored(other, 1e-2), Tolerance(rtol=1e-2)).ok


def test_a_rerun_that_stays_finite_where_the_base_diverged_makes_the_divergence_unstable() -> None:
    steps = np.arange(1, 301, dtype=np.float64)
    diverged = 1.0 / steps
    diverged[5:] = np.nan
    finite = (1.0 / steps) * (1 + 1e-6)
    nan_weights = {
        "dense/kernel": np.array([[np.nan]], np.float32),
        "dense/bias": np.array([np.nan], np.float32),
    }
    base = make_run(diverged, update_size=np.full(300, 1e-3), final_weights=nan_weights)
    other = make_run(finite, update_size=np.full(300, 1e-3))
    calibration = calibrate(base, [other], current_rtol=1e-2, miss_fraction=0.01)
    tolerance = calibration.tolerance()
    assert tolerance.divergence_unstable
    assert Tolerance.from_text(tolerance.to_text()) == tolerance
    # the history before the first NaN is still compared with a measured, finite rtol
    assert tolerance.rtol < 1e-3
    configured = Tolerance(rtol=1e-2).widened(tolerance)
    assert compare(_stored(base, 1e-2), _stored(other, 1e-2), configured).ok
    assert not compare(_stored(base, 1e-2), _stored(other, 1e-2), Tolerance(rtol=1e-2)).ok
    # ... so a run that parts before the NaN still fails
    early = (1.0 / steps) * (1 + 0.5)
    assert not compare(_stored(base, 1e-2), _stored(make_run(early), 1e-2), configured).ok


def test_an_event_one_ulp_moves_by_a_tenth_of_the_run_may_move_anywhere() -> None:
    steps = np.arange(1, 1001, dtype=np.float64)
    base = make_run(1.0 / steps, update_size=np.full(1000, 1e-3))
    other = make_run(1.0 / steps, update_size=np.full(1000, 1e-3))
    near = calibrate(base, [other], current_rtol=1e-2, miss_fraction=0.01)
    moved = {**near.event_spread, "stall_step": 30}
    from dataclasses import replace

    assert replace(near, event_spread=moved).recommended_event_atol == math.ceil(MARGIN * 30)
    assert replace(near, event_spread={"stall_step": 101}).recommended_event_atol == 1000


def _tail_change(change: float, steps: int = 2000) -> np.ndarray:
    head = np.linspace(2.0, 1.0, steps - steps // 10)
    return np.r_[head, np.linspace(1.0, 1.0 + change, steps // 10)]


def test_foreign_runs_count_as_reruns_and_their_kernels_are_named() -> None:
    from pytest_convergence.gate.foreign import trajectory_of
    from pytest_convergence.gate.results import RunRecord
    from pytest_convergence.snapshot.calibrate import ForeignRun

    base = make_run(_tail_change(-4e-4))
    other = make_run(_tail_change(-4e-4) * (1 + 2e-3 * np.linspace(0, 1, 2000)))
    record = RunRecord.from_run(other, test="t", status="failed")
    foreign = ForeignRun("avx2", trajectory_of(record), {"plateau": record.evidence["relative_change"]})
    alone = calibrate(base, [], current_rtol=1e-4, miss_fraction=0.01)
    across = calibrate(base, [], current_rtol=1e-4, miss_fraction=0.01, foreign=[foreign], variant="native")
    assert alone.recommended_rtol == 0.0 and across.recommended_rtol > 1e-3
    assert across.runs == 2 and across.variants == ("native", "avx2")
    assert "variants=native|avx2" in across.tolerance().to_text()
    assert Tolerance.from_text(across.tolerance().to_text()).variants == ("native", "avx2")


def test_a_decision_another_kernel_moved_toward_its_threshold_makes_its_outcome_possible() -> None:
    """Calibration's own borderline rule: the measured move of the deciding quantity, times the
    margin, reaches the threshold: the outcome across it joins the snapshot's outcomes, though no
    rerun took it (two-moons mixed_float16: -0.036% here, -0.1% on an AMD EPYC with AVX-512)."""
    from pytest_convergence.snapshot.calibrate import ForeignRun

    base = make_run(_tail_change(-3.6e-4))
    assert base.outcome == "plateau" and base.diagnosis.borderline is None
    seen = make_run(_tail_change(-6e-4))
    far = ForeignRun(
        "avx2", Trajectory.parse(Trajectory.from_run(seen, Tolerance(rtol=1.0)).render()), {"plateau": -6e-4}
    )
    calibration = calibrate(base, [], current_rtol=1.0, miss_fraction=0.01, foreign=[far])
    assert calibration.near == ("descending",)  # |-6e-4 - -3.6e-4| x 3 reaches the -0.1% rule
    assert calibration.tolerance().outcomes == ("descending", "plateau")
    still = ForeignRun("sse41", far.trajectory, {"plateau": -3.7e-4})
    assert calibrate(base, [], current_rtol=1.0, miss_fraction=0.01, foreign=[still]).near == ()
