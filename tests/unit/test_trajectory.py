"""The snapshot text format: which steps are stored, how numbers are printed, and reading it back.

Everything here is numpy: runs are built by hand (no TensorFlow), rendered to text and parsed again,
exactly as the snapshot extension does with a stored file and a new run.
"""

from __future__ import annotations

import math
from typing import Any

import factories
import numpy as np
import pytest

from pytest_convergence.run import Run
from pytest_convergence.snapshot.format import (
    DENSE_STEPS,
    FORMAT_VERSION,
    FULL_TENSOR_LIMIT,
    MAGIC,
    SnapshotFormatError,
    Trajectory,
    checkpoint_steps,
    format_number,
    render_run,
)
from pytest_convergence.tolerance import resolve

VERSIONS = {
    "python": "3.11.9",
    "numpy": "1.26.4",
    "tensorflow": "2.16.1",
    "keras": "3.3.3",
    "platform": "Linux-x86_64",
}


WEIGHTS = {"dense/kernel": [[0.75]], "dense/bias": [-0.25]}


def make_run(
    loss: Any,
    *,
    dtype: str = "float32",
    loss_dtype: str = "float32",
    final_weights: dict[str, np.ndarray] | None = None,
    target_loss: float | None = None,
    case: str = "synthetic",
) -> Run:
    """A Run of the shared factory, its history rounded to ``loss_dtype``, float32 weights."""
    storage = np.dtype("float32") if loss_dtype == "bfloat16" else np.dtype(loss_dtype)
    return factories.make_run(
        np.asarray(loss, np.float64).astype(storage).astype(np.float64),
        case=case,
        dtype=dtype,
        seed=7,
        versions=VERSIONS,
        loss_dtype=loss_dtype,
        variable_dtype="float32" if dtype.startswith("mixed_") else dtype,
        compute_dtype=dtype.removeprefix("mixed_"),
        final_weights=final_weights or {k: np.array(v, np.float32) for k, v in WEIGHTS.items()},
        target_loss=target_loss,
    )


def falling(steps: int, start: float = 1.0, stop: float = 0.1) -> np.ndarray:
    return np.geomspace(start, stop, steps)


def sample_text(steps: int = 60) -> str:
    """A valid snapshot text of a small descending run."""
    return render_run(make_run(falling(steps)), resolve("float32"), test="tests/test_x.py::test_y")


def line_number(text: str, predicate: Any) -> int:
    """1-based number of the first line of ``text`` for which ``predicate`` is true."""
    for number, line in enumerate(text.splitlines(), start=1):
        if predicate(line):
            return number
    raise AssertionError("no such line")


# ------------------------------------------------------------------------------ checkpoint_steps
@pytest.mark.parametrize("n", [1, 2, 7, 49, 50])
def test_checkpoint_steps_of_a_short_run_are_every_step(n: int) -> None:
    steps = checkpoint_steps(n)
    np.testing.assert_array_equal(steps, np.arange(1, n + 1))
    assert steps.size == n


@pytest.mark.parametrize("n", [51, 52, 100, 151, 999, 1000, 12_345, 100_000, 10_000_000])
def test_checkpoint_steps_are_dense_then_log_spaced_and_end_at_the_last_step(n: int) -> None:
    steps = checkpoint_steps(n)
    np.testing.assert_array_equal(steps[:DENSE_STEPS], np.arange(1, DENSE_STEPS + 1))
    assert steps[-1] == n
    assert np.all(np.diff(steps) > 0), "strictly increasing"
    assert steps[0] >= 1
    assert np.issubdtype(steps.dtype, np.integer)
    assert steps.size <= min(n, DENSE_STEPS + 150)


def test_checkpoint_steps_of_a_long_run_are_about_200_log_spaced_points() -> None:
    steps = checkpoint_steps(100_000)
    assert 190 <= steps.size <= 201
    after = steps[DENSE_STEPS - 1 :].astype(np.float64)
    ratios = after[1:] / after[:-1]
    # log-spaced: every step a roughly constant factor after the one before (2000**(1/149) ~ 1.052)
    assert ratios.max() < 1.07
    assert ratios[-20:].min() > 1.04
    # not dense after the start: the points thin out
    assert np.count_nonzero(steps > 1000) < 100


def test_checkpoint_steps_of_a_run_just_past_the_dense_part() -> None:
    np.testing.assert_array_equal(checkpoint_steps(51), np.arange(1, 52))
    np.testing.assert_array_equal(checkpoint_steps(100), np.arange(1, 101))


# ------------------------------------------------------------------------------ format_number
def random_values(dtype: str, count: int, seed: int) -> np.ndarray:
    """Finite values of ``dtype`` drawn from random bit patterns: every exponent, subnormals, signs."""
    rng = np.random.default_rng(seed)
    numpy_dtype = np.dtype(dtype)
    unsigned = np.dtype(f"u{numpy_dtype.itemsize}")
    raw = rng.integers(0, np.iinfo(unsigned).max, size=count, dtype=unsigned, endpoint=True)
    values = raw.view(numpy_dtype)
    return values[np.isfinite(values)]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_format_number_reads_back_as_the_same_value_of_its_dtype(dtype: str) -> None:
    numpy_type = np.dtype(dtype).type
    info = np.finfo(dtype)
    specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        1 / 3,
        info.max,
        -info.max,
        info.tiny,
        info.eps,
        info.smallest_subnormal,
    ]
    values = np.concatenate([random_values(dtype, 5000, seed=1), np.array(specials, dtype)])
    for value in values:
        text = format_number(value, dtype)
        assert numpy_type(float(text)) == value, (dtype, value, text)
        assert " " not in text


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_format_number_is_the_shortest_text(dtype: str) -> None:
    assert format_number(0.5, dtype) == "0.5"
    assert format_number(0.0, dtype) == "0"
    assert format_number(-2.0, dtype) == "-2"
    assert format_number(np.dtype(dtype).type(0.1), dtype) == "0.1"
    expected_third = {"float16": "0.3333", "float32": "0.33333334", "float64": "0.3333333333333333"}
    assert format_number(1 / 3, dtype) == expected_third[dtype]


def test_format_number_uses_scientific_notation_when_shorter() -> None:
    assert format_number(1e-30, "float32") == "1e-30"
    assert format_number(1e-40, "float64") == "1e-40"
    assert format_number(2.5e20, "float64") == "2.5e+20"
    assert format_number(1234.5, "float64") == "1234.5"


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def test_format_number_bfloat16_reads_back_within_bfloat16_precision() -> None:
    raw = random_values("float32", 5000, seed=2).view(np.uint32) & np.uint32(0xFFFF0000)
    values = raw.view(np.float32)
    values = values[np.isfinite(values)]
    values = np.concatenate([values, np.array([1.0, -1.0, 0.0, 3.3895314e38, 1.0078125], np.float32)])
    for value in values:
        text = format_number(value, "bfloat16")
        back = float(text)
        # within half a bfloat16 spacing (2**-8 of the value, relative), so it rounds back to itself
        assert abs(back - float(value)) <= 2.0**-9 * abs(float(value)), (value, text)
        assert to_bfloat16(np.array([back], np.float32))[0] == value, (value, text)
        assert len(text.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) <= 4


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "mixed_float16"])
def test_format_number_of_nan_and_inf(dtype: str) -> None:
    assert format_number(math.nan, dtype) == "nan"
    assert format_number(math.inf, dtype) == "inf"
    assert format_number(-math.inf, dtype) == "-inf"
    assert math.isnan(float(format_number(math.nan, dtype)))
    assert float(format_number(-math.inf, dtype)) == -math.inf


# ------------------------------------------------------------------------------ round trip
def in_dtype(values: Any, dtype: str) -> np.ndarray:
    """Values as their dtype holds them: a snapshot reads back the same number *in that dtype*."""
    return np.asarray(values, np.float64).astype(np.float32 if dtype == "bfloat16" else dtype)


def assert_same_trajectory(a: Trajectory, b: Trajectory) -> None:
    assert a.header == b.header
    assert a.outcome == b.outcome
    assert a.events == b.events
    assert a.loss_dtype == b.loss_dtype
    assert a.weight_dtype == b.weight_dtype
    np.testing.assert_array_equal(in_dtype(a.final_loss, a.loss_dtype), in_dtype(b.final_loss, a.loss_dtype))
    assert list(a.weights) == list(b.weights)
    for name, (kind, values) in a.weights.items():
        assert b.weights[name][0] == kind
        dtype = a.weight_dtype if kind == "values" else "float64"
        np.testing.assert_array_equal(in_dtype(b.weights[name][1], dtype), in_dtype(values, dtype))
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(in_dtype(a.losses, a.loss_dtype), in_dtype(b.losses, a.loss_dtype))


def test_render_then_parse_preserves_everything_compared() -> None:
    big = np.linspace(-1.5, 2.5, 48, dtype=np.float32).reshape(6, 8)
    weights = {
        "dense/kernel": np.array([[0.75, -1e-7], [3.0, 0.1]], np.float32),
        "dense/bias": np.array([-0.25], np.float32),
        "big/kernel": big,
    }
    run = make_run(falling(300, 2.0, 0.05), final_weights=weights, target_loss=0.5)
    tolerance = resolve("float32", case={"rtol": 3e-4, "event_atol": 5})
    made = Trajectory.from_run(run, tolerance, test="tests/test_x.py::test_y[float32]")
    text = made.render()
    parsed = Trajectory.parse(text)

    assert_same_trajectory(made, parsed)
    assert parsed.outcome == run.outcome == "descending"
    assert parsed.events == {"steps_to_target": run.steps_to_target}
    assert np.float32(parsed.final_loss) == np.float32(run.final_loss)
    assert parsed.total_steps == 300
    np.testing.assert_array_equal(parsed.steps, checkpoint_steps(300))
    np.testing.assert_array_equal(
        parsed.losses.astype(np.float32), run.loss[checkpoint_steps(300) - 1].astype(np.float32)
    )
    assert parsed.weights["dense/kernel (2, 2)"][0] == "values"
    np.testing.assert_array_equal(
        parsed.weights["dense/kernel (2, 2)"][1].astype(np.float32), weights["dense/kernel"].reshape(-1)
    )
    assert parsed.weights["dense/bias (1,)"][0] == "values"
    np.testing.assert_array_equal(parsed.weights["dense/bias (1,)"][1], [-0.25])
    kind, summary = parsed.weights["big/kernel (6, 8)"]
    assert kind == "norm mean min max"
    flat = big.astype(np.float64).reshape(-1)
    np.testing.assert_array_equal(summary, [np.linalg.norm(flat), flat.mean(), flat.min(), flat.max()])
    assert "weight big/kernel (6, 8) norm mean min max: " in text
    # the text is stable: rendering what was read gives the same text
    assert parsed.render() == text
    assert parsed.compared_text == made.body_text()


def test_header_fields_are_parsed_and_the_tolerance_reads_back() -> None:
    run = make_run(falling(80), dtype="mixed_float16", case="seed")
    tolerance = resolve("mixed_float16", case={"miss_fraction": 0.05}, marker={"event_rtol": 0.1})
    text = render_run(run, tolerance, test="tests/test_seed.py::test_seed")
    lines = text.splitlines()
    assert lines[0] == f"{MAGIC} v{FORMAT_VERSION}"
    assert lines[-1] == "end"
    parsed = Trajectory.parse(text)
    assert parsed.header == {
        "test": "tests/test_seed.py::test_seed",
        "case": "seed",
        "dtype": "mixed_float16",
        "engine": "loop",
        "steps": "80",
        "seed": "7",
        "optimizer": "SGD",
        "loss dtype": "float32",
        "weights dtype": "float32",
        "final loss of": "the last step",
        "versions": "python 3.11.9, numpy 1.26.4, tensorflow 2.16.1, keras 3.3.3",
        "platform": "Linux-x86_64",
        "tolerance": tolerance.to_text(),
    }
    assert next(iter(parsed.header)) == "test"
    assert parsed.tolerance == tolerance
    assert parsed.tolerance.rtol == 1e-2
    assert parsed.tolerance.miss_fraction == 0.05
    assert parsed.tolerance.event_rtol == 0.1


def test_a_trajectory_without_a_tolerance_in_its_header() -> None:
    text = sample_text().replace("tolerance: ", "# tolerance: ")
    assert Trajectory.parse(text).tolerance is None


def test_exact_tolerance_round_trips_through_the_header() -> None:
    tolerance = resolve("float64", exact=True)
    parsed = Trajectory.parse(
        render_run(make_run(falling(20), dtype="float64", loss_dtype="float64"), tolerance)
    )
    assert parsed.tolerance == tolerance
    assert parsed.tolerance.exact is True


def test_events_round_trip() -> None:
    made = Trajectory(
        header={"case": "c"},
        outcome="stalled",
        events={"stall_step": 61, "steps_to_target": -1, "first_zero_step": 1},
        final_loss=0.29,
        weights={},
        steps=np.arange(1, 4),
        losses=np.array([1.0, 0.5, 0.29]),
    )
    text = made.render()
    assert "event first_zero_step: 1\nevent stall_step: 61\nevent steps_to_target: -1\n" in text
    parsed = Trajectory.parse(text)
    assert parsed.events == made.events
    assert parsed.outcome == "stalled"
    assert_same_trajectory(made, parsed)


def test_a_diverged_run_round_trips_its_nan_and_event() -> None:
    loss = falling(40)
    loss[24:] = math.nan
    run = make_run(loss)
    parsed = Trajectory.parse(render_run(run, resolve("float32")))
    assert parsed.outcome == "diverged"
    assert parsed.events["first_nonfinite_step"] == 25
    assert math.isnan(parsed.final_loss)
    assert np.isnan(parsed.losses[24:]).all()
    assert np.isfinite(parsed.losses[:24]).all()


@pytest.mark.parametrize("loss_dtype", ["float16", "bfloat16", "float32", "float64"])
def test_losses_round_trip_in_their_dtype(loss_dtype: str) -> None:
    values = falling(120, 3.0, 1e-3)
    if loss_dtype == "bfloat16":
        values = to_bfloat16(values.astype(np.float32)).astype(np.float64)
    run = make_run(values, dtype=loss_dtype, loss_dtype=loss_dtype)
    parsed = Trajectory.parse(render_run(run, resolve(loss_dtype)))
    assert parsed.loss_dtype == loss_dtype
    expected = run.loss[checkpoint_steps(120) - 1]
    if loss_dtype == "bfloat16":
        np.testing.assert_array_equal(
            to_bfloat16(parsed.losses.astype(np.float32)), expected.astype(np.float32)
        )
        np.testing.assert_allclose(parsed.losses, expected, rtol=2.0**-9)
    else:
        # the text holds the shortest digits that read back as the same value of the loss dtype
        np.testing.assert_array_equal(parsed.losses.astype(loss_dtype), expected.astype(loss_dtype))
        np.testing.assert_allclose(parsed.losses, expected, rtol=float(np.finfo(loss_dtype).eps))


@pytest.mark.parametrize(
    ("size", "kind"), [(FULL_TENSOR_LIMIT, "values"), (FULL_TENSOR_LIMIT + 1, "norm mean min max")]
)
def test_tensors_up_to_the_limit_are_stored_whole_and_larger_ones_summarised(size: int, kind: str) -> None:
    weights = {"w": np.arange(size, dtype=np.float32) - 3.5}
    parsed = Trajectory.parse(render_run(make_run(falling(10), final_weights=weights), resolve("float32")))
    assert parsed.weights[f"w ({size},)"][0] == kind
    assert parsed.weights[f"w ({size},)"][1].size == (size if kind == "values" else 4)


def test_summary_of_a_tensor_with_nonfinite_values_uses_the_finite_ones_for_min_and_max() -> None:
    tensor = np.linspace(-2.0, 3.0, 40).astype(np.float32)
    tensor[5] = np.nan
    parsed = Trajectory.parse(
        render_run(make_run(falling(10), final_weights={"w": tensor}), resolve("float32"))
    )
    kind, (norm, mean, low, high) = parsed.weights["w (40,)"]
    assert kind == "norm mean min max"
    assert math.isnan(norm)
    assert math.isnan(mean)
    assert low == -2.0
    assert high == 3.0


def test_windows_line_endings_are_read() -> None:
    text = sample_text()
    parsed = Trajectory.parse(text.replace("\n", "\r\n"))
    assert_same_trajectory(Trajectory.parse(text), parsed)


# ------------------------------------------------------------------------------ corrupt texts
def test_an_empty_text_is_not_a_snapshot() -> None:
    with pytest.raises(SnapshotFormatError, match=r"not a pytest-convergence snapshot.*\(empty file\)"):
        Trajectory.parse("")


def test_another_file_is_not_a_snapshot_and_the_message_shows_its_first_line() -> None:
    with pytest.raises(SnapshotFormatError) as error:
        Trajectory.parse("# -*- coding: utf-8 -*-\nimport os\nend\n")
    assert (
        str(error.value) == "not a pytest-convergence snapshot: the first line is '# -*- coding: utf-8 -*-'"
    )
    assert isinstance(error.value, ValueError)


def test_a_future_format_version_is_refused_by_name() -> None:
    text = sample_text().replace(f"{MAGIC} v{FORMAT_VERSION}", f"{MAGIC} v2", 1)
    with pytest.raises(SnapshotFormatError) as error:
        Trajectory.parse(text)
    assert "snapshot format v2 is not the v1 this version of pytest-convergence reads" in str(error.value)


def test_a_text_without_its_end_line_is_truncated() -> None:
    text = sample_text()
    assert text.endswith("\nend\n")
    with pytest.raises(SnapshotFormatError, match="truncated: its last line is not 'end'"):
        Trajectory.parse(text.removesuffix("end\n"))


@pytest.mark.parametrize("where", [0.3, 0.5, 0.9, 0.999])
def test_a_text_cut_in_the_middle_of_the_checkpoints_is_truncated(where: float) -> None:
    text = sample_text(steps=400)
    start = text.index("checkpoints (step loss):")
    cut = start + int((len(text) - start) * where)
    with pytest.raises(SnapshotFormatError, match="truncated"):
        Trajectory.parse(text[:cut])


def test_a_nonsense_line_in_the_compared_section_is_named_by_line_number() -> None:
    lines = sample_text().splitlines()
    at = line_number("\n".join(lines), lambda line: line.startswith("final loss:"))
    lines.insert(at, "this line was typed by hand")
    with pytest.raises(SnapshotFormatError) as error:
        Trajectory.parse("\n".join(lines) + "\n")
    assert str(error.value) == f"line {at + 1}: cannot read 'this line was typed by hand'"


def test_a_bad_number_in_the_checkpoints_is_named_by_line_number() -> None:
    text = sample_text()
    number = line_number(text, lambda line: line.startswith("17 "))
    lines = text.splitlines()
    lines[number - 1] = "17 zero-point-five"
    with pytest.raises(SnapshotFormatError, match=rf"^line {number}: cannot read '17 zero-point-five'$"):
        Trajectory.parse("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("event steps_to_target: 19", "event steps_to_target: nineteen"),
        ("final loss: ", "final loss: about "),
        ("weight dense/bias (1,) values: -0.25", "weight dense/bias (1,) values: -0.25 oops"),
    ],
)
def test_a_hand_edited_value_is_named_by_line_number(old: str, new: str) -> None:
    run = make_run(falling(60), target_loss=0.5)
    assert run.steps_to_target == 19
    text = render_run(run, resolve("float32"))
    assert old in text
    number = line_number(text, lambda line: line.startswith(old))
    with pytest.raises(SnapshotFormatError, match=rf"^line {number}: cannot read "):
        Trajectory.parse(text.replace(old, new, 1))


def test_a_header_line_without_key_and_value_is_named_by_line_number() -> None:
    lines = sample_text().splitlines()
    lines.insert(3, "nonsense")
    with pytest.raises(
        SnapshotFormatError, match=r"^line 4: expected 'key: value' in the header, got 'nonsense'$"
    ):
        Trajectory.parse("\n".join(lines) + "\n")


def test_a_removed_checkpoint_line_is_a_count_mismatch() -> None:
    text = sample_text(steps=60)
    assert "loss at 60 checkpoints (step loss):" in text
    lines = [line for line in text.splitlines() if not line.startswith("30 ")]
    with pytest.raises(SnapshotFormatError) as error:
        Trajectory.parse("\n".join(lines) + "\n")
    assert str(error.value) == "expected 60 checkpoints, found 59: the file was cut or edited"


def test_an_edited_checkpoint_count_is_a_count_mismatch() -> None:
    text = sample_text(steps=60).replace("loss at 60 checkpoints", "loss at 61 checkpoints")
    with pytest.raises(SnapshotFormatError, match="expected 61 checkpoints, found 60"):
        Trajectory.parse(text)


def test_a_text_without_checkpoints_is_a_count_mismatch() -> None:
    lines = sample_text(steps=10).splitlines()
    head = lines[: line_number("\n".join(lines), lambda line: line.startswith("loss at")) - 1]
    with pytest.raises(SnapshotFormatError, match="expected -1 checkpoints, found 0"):
        Trajectory.parse("\n".join([*head, "end"]) + "\n")


def test_a_missing_outcome_is_reported() -> None:
    lines = [line for line in sample_text().splitlines() if not line.startswith("outcome: ")]
    with pytest.raises(SnapshotFormatError, match="the compared section has no 'outcome:' line"):
        Trajectory.parse("\n".join(lines) + "\n")


def test_a_missing_compared_section_is_a_format_error() -> None:
    lines = [line for line in sample_text().splitlines() if not line.startswith("# compared")]
    with pytest.raises(SnapshotFormatError):
        Trajectory.parse("\n".join(lines) + "\n")


def test_a_missing_compared_section_is_reported_as_such() -> None:
    text = "\n".join([f"{MAGIC} v1", "case: x", "dtype: float32", "end"]) + "\n"
    with pytest.raises(SnapshotFormatError, match="no '# compared' section"):
        Trajectory.parse(text)


def test_every_prefix_of_a_snapshot_fails_with_a_snapshot_format_error() -> None:
    """However a write was interrupted, reading the file says what is wrong instead of crashing."""
    text = sample_text(steps=55)
    for cut in range(0, len(text) - len("end\n"), 7):
        with pytest.raises(SnapshotFormatError):
            Trajectory.parse(text[:cut])
