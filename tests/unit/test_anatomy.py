"""A step's anatomy without TensorFlow: its storage (results-file JSON, a replay's ``.npz``), the
localisation of the first differing stage, the replay plan's reader, and the mechanism each stage
is read as, on anatomies and records built by hand.

Every anatomy here is a plausible chain: each stage's digest distinct per step, the weights after
a step the weights before the next. :func:`differ` changes some of its fields from some step on,
as a real change does (everything after the first difference differs too), so each test also
checks that the *first* difference is the one named.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_convergence.anatomy import DIGESTS, ROWS, SCALARS, Anatomy
from pytest_convergence.case import Case
from pytest_convergence.gate.localise import (
    BATCH,
    GRADIENTS,
    INITIALISATION,
    LOSS,
    OUTPUT,
    STAGES,
    UPDATE,
    WEIGHTS,
    localise,
)
from pytest_convergence.gate.mechanism import NOT_LOCALISED, explain, group
from pytest_convergence.gate.replay_evidence import ReplayEvidence
from pytest_convergence.gate.replay_rounds import plan_path, plan_round, write_round
from pytest_convergence.gate.results import Results, RunRecord
from pytest_convergence.gate.verdict import compare_results
from pytest_convergence.gate.verdict_text import format_table, markdown
from pytest_convergence.replay_plan import Replay, ReplayError, ReplayPlan, load_plan

WEIGHT_NAMES = ["dense/kernel", "dense/bias"]
KERNEL, BIAS = 0, 1

STAGE_FIELDS = {
    INITIALISATION: ("weights_before",),
    BATCH: ("batch", "batch_set"),
    WEIGHTS: ("weights_before",),
    OUTPUT: ("output", "output_set", "output_sum"),
    LOSS: ("loss",),
    GRADIENTS: ("gradients", "gradient_sums"),
    UPDATE: ("weights_after", "weight_sums"),
}
"""The fields that make each stage of a step, in the order a step is made (``weights`` is
``weights_before`` again: the weights entering a step after the first)."""
NUDGE = 1 + 2**-20
"""What :func:`differ` multiplies a number by: a difference its 9 printed digits show."""

CONFIGURATION = {
    "output dtype": "float32",
    "dtype policy": "float32",
    "loss scaling": "off",
    "optimizer": "keras.src.optimizers.rmsprop.RMSprop",
    "loss": "keras.src.losses.losses.BinaryCrossentropy",
    "shuffling": "off",
    "jit_compile": "off",
}
RMSPROP = {"learning_rate": 0.01, "rho": 0.9, "epsilon": 1e-07, "name": "rmsprop"}
BCE = {"from_logits": True, "name": "binary_crossentropy"}


def anatomy(
    steps: int = 3,
    *,
    first_step: int = 1,
    weights: list[str] | None = None,
    configuration: dict[str, str] | None = None,
    matches_run: bool | None = True,
) -> Anatomy:
    """Steps ``first_step`` on of a plausible run, every digest distinct, every sum positive."""
    names = list(weights if weights is not None else WEIGHT_NAMES)
    step = np.arange(first_step, first_step + steps, dtype=np.int64)
    column = np.arange(len(names), dtype=np.int64)
    grid = 10 * step[:, None] + column
    return Anatomy(
        first_step=first_step,
        weights=names,
        loss=0.7 / step,
        batch=100 + step,
        batch_set=200 + step,
        output=300 + step,
        output_set=400 + step,
        output_sum=0.25 * step,
        weights_before=1000 + grid,
        gradients=2000 + grid,
        gradient_sums=0.001 * grid,
        weights_after=1010 + grid,
        weight_sums=0.5 + 0.001 * grid,
        configuration=dict(configuration if configuration is not None else CONFIGURATION),
        matches_run=matches_run,
    )


def differ(
    base: Anatomy, fields: tuple[str, ...], step: int, *, column: int | None = None, later: bool = True
) -> Anatomy:
    """A copy whose ``fields`` differ at ``step`` (one ``column`` of a row, or all), and whose
    every field but the batch differs at each later step (``later``): how a real change
    propagates (the data pipeline draws its batches whatever the weights do)."""
    changed = dataclasses.replace(base, configuration=dict(base.configuration))
    at = step - base.first_step
    for name in (*SCALARS, *ROWS):
        values = np.array(getattr(base, name), copy=True)
        rows = [at] if name in fields else []
        if later and name not in ("batch", "batch_set"):
            rows += list(range(at + 1, len(values)))
        for row in rows:
            where: Any = (row, column) if (column is not None and name in ROWS and row == at) else row
            if name in DIGESTS:
                values[where] = values[where] + 7
            else:
                values[where] = values[where] * NUDGE
        setattr(changed, name, values)
    return changed


def from_stage(base: Anatomy, stage: str, step: int, *, column: int | None = None) -> Anatomy:
    """A copy that differs from ``stage`` of ``step`` on: that stage and every one the step
    computes after it (other weights or another batch give another output, loss...)."""
    order = list(STAGE_FIELDS)
    computed = order[max(order.index(stage), order.index(OUTPUT)) :]
    fields = STAGE_FIELDS[stage] + tuple(f for s in computed for f in STAGE_FIELDS[s])
    return differ(base, tuple(dict.fromkeys(fields)), step, column=column)


# ------------------------------------------------------------------------------ storage
def assert_same_anatomy(a: Anatomy, b: Anatomy) -> None:
    assert (a.first_step, a.weights, a.configuration, a.matches_run) == (
        b.first_step,
        b.weights,
        b.configuration,
        b.matches_run,
    )
    for name in (*SCALARS, *ROWS):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape, name
        if name in DIGESTS:
            assert x.dtype == y.dtype == np.int64, name
            assert np.array_equal(x, y), name
        else:
            assert np.array_equal(x.astype(np.float64), y.astype(np.float64), equal_nan=True), name


def extreme() -> Anatomy:
    """Digests at the ends of int64 (a digest is a wrapped sum: any bit pattern), and losses and
    sums that are not finite (a run that diverged)."""
    made = anatomy()
    made.batch = np.array([-1, -(2**63), 2**63 - 1], np.int64)
    made.gradients = np.array([[-2, 0], [2**62, -(2**62)], [-(2**63), 1]], np.int64)
    made.loss = np.array([0.1, math.nan, math.inf])
    made.gradient_sums = np.array([[-math.inf, 0.0], [math.nan, 1e-300], [5e-324, -0.0]])
    made.configuration = {"output dtype": "float16", "dtype policy": "mixed_float16"}
    made.matches_run = False
    return made


def test_json_round_trip_keeps_every_digest_and_nan_losses_exactly() -> None:
    made = extreme()
    text = json.dumps(made.to_json(), allow_nan=False)  # strict JSON: no NaN or Infinity tokens
    document = json.loads(text)
    assert document["batch"] == ["ffffffffffffffff", "8000000000000000", "7fffffffffffffff"]
    assert document["loss"] == [0.1, "nan", "inf"]
    assert document["gradient_sums"][0] == ["-inf", 0.0]
    assert_same_anatomy(Anatomy.from_json(document), made)


def test_json_of_an_earlier_version_without_unordered_digests_reads_the_ordered_ones() -> None:
    document = anatomy().to_json()
    del document["batch_set"], document["output_set"]
    read = Anatomy.from_json(document)
    assert np.array_equal(read.batch_set, read.batch)
    assert np.array_equal(read.output_set, read.output)


@pytest.mark.parametrize("missing", ["loss", "weights", "gradients"])
def test_json_without_a_field_is_a_key_error(missing: str) -> None:
    document = anatomy().to_json()
    del document[missing]
    with pytest.raises(KeyError):
        Anatomy.from_json(document)


def test_json_with_a_row_of_the_wrong_width_is_a_value_error() -> None:
    document = anatomy().to_json()
    document["weights"] = ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias"]  # 6 values
    with pytest.raises(ValueError):
        Anatomy.from_json(document)


def test_npz_round_trip_keeps_digests_nan_and_the_initial_weights(tmp_path: Path) -> None:
    made = extreme()
    made.initial_weights = [np.array([[0.25], [-0.5]], np.float32), np.array([0.0], np.float32)]
    path = tmp_path / "anatomy-old" / "seed[float16].npz"
    made.save(path)
    loaded = Anatomy.load(path)
    assert_same_anatomy(loaded, made)
    assert [w.dtype for w in loaded.initial_weights] == [np.float32, np.float32]
    assert all(np.array_equal(a, b) for a, b in zip(loaded.initial_weights, made.initial_weights))
    assert [p.name for p in path.parent.iterdir()] == ["seed[float16].npz"]  # no temporary left


def test_npz_of_an_earlier_version_without_unordered_digests_reads_the_ordered_ones(tmp_path: Path) -> None:
    made = anatomy()
    made.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as data:
        kept = {name: data[name] for name in data.files if name not in ("batch_set", "output_set")}
    np.savez(tmp_path / "old.npz", **kept)
    read = Anatomy.load(tmp_path / "old.npz")
    assert np.array_equal(read.batch_set, made.batch)
    assert read.initial_weights == []


def test_check_against_compares_losses_bitwise_nan_included() -> None:
    made = anatomy(first_step=2)
    made.loss = np.array([0.5, math.nan, 0.25])
    assert made.check_against(np.array([0.9, 0.5, math.nan, 0.25, 0.1])) is True
    assert made.matches_run is True
    assert made.check_against(np.array([0.9, 0.5, math.nan, np.nextafter(0.25, 1.0)])) is False
    assert made.check_against(np.array([0.9, 0.5])) is False  # the run is shorter than its anatomy
    assert (made.first_step, made.last_step, list(made.steps)) == (2, 4, [2, 3, 4])


# ------------------------------------------------------------------------------ localise
def test_equal_anatomies_localise_nothing_and_say_what_was_compared() -> None:
    found = localise(anatomy(), anatomy())
    assert not found.found
    assert (found.first_step, found.last_step, found.compared, found.caveat) == (1, 3, "steps 1-3", "")


@pytest.mark.parametrize(
    ("stage", "step"),
    [
        (INITIALISATION, 1),
        (BATCH, 1),
        (BATCH, 3),
        (OUTPUT, 1),
        (OUTPUT, 2),
        (LOSS, 1),
        (LOSS, 3),
        (GRADIENTS, 2),
        (UPDATE, 1),
        (UPDATE, 3),
    ],
)
def test_the_first_differing_stage_is_named_whatever_differs_after_it(stage: str, step: int) -> None:
    found = localise(anatomy(), from_stage(anatomy(), stage, step, column=BIAS))
    assert (found.stage, found.step) == (stage, step)
    assert found.weight == ("dense/bias" if stage in (INITIALISATION, GRADIENTS, UPDATE) else None)


def test_stages_are_listed_in_the_order_a_step_is_made() -> None:
    assert STAGES == (INITIALISATION, BATCH, WEIGHTS, OUTPUT, LOSS, GRADIENTS, UPDATE)


def test_the_first_weight_that_differs_is_named() -> None:
    both = differ(anatomy(), ("gradients",), 1)
    assert localise(anatomy(), both).weight == "dense/kernel"
    assert localise(anatomy(), differ(anatomy(), ("gradients",), 1, column=BIAS)).weight == "dense/bias"


def test_each_numeric_stage_carries_both_sides_values() -> None:
    old = anatomy()
    loss = localise(old, from_stage(old, LOSS, 2))
    assert (loss.old_value, loss.new_value) == (old.loss[1], old.loss[1] * NUDGE)
    output = localise(old, from_stage(old, OUTPUT, 1))
    assert (output.old_value, output.new_value) == (0.25, 0.25 * NUDGE)
    gradient = localise(old, differ(old, ("gradients", "gradient_sums"), 3, column=BIAS))
    assert gradient.old_value == old.gradient_sums[2][BIAS]
    assert gradient.new_value == old.gradient_sums[2][BIAS] * NUDGE
    update = localise(old, differ(old, ("weights_after", "weight_sums"), 1, column=KERNEL))
    assert (update.weight, update.old_value) == ("dense/kernel", old.weight_sums[0][KERNEL])


def test_a_digest_change_with_equal_sums_is_still_a_difference() -> None:
    """A one-ulp change of one weight among many rounds away in a float64 sum; the digest sees it."""
    new = differ(anatomy(), ("weights_after",), 2, column=KERNEL, later=False)
    found = localise(anatomy(), new)
    assert (found.stage, found.step, found.weight) == (UPDATE, 2, "dense/kernel")
    assert found.old_value == found.new_value


def test_nan_losses_on_both_sides_are_equal_and_nan_against_a_number_is_not() -> None:
    old = anatomy()
    old.loss = np.array([0.5, math.nan, math.nan])
    both = dataclasses.replace(old, loss=np.array([0.5, math.nan, math.nan]))
    assert not localise(old, both).found
    one = dataclasses.replace(old, loss=np.array([0.5, 0.4, math.nan]))
    found = localise(old, one)
    assert (found.stage, found.step, found.new_value) == (LOSS, 2, 0.4)
    assert math.isnan(found.old_value)


def test_weights_that_differ_entering_a_later_window_began_before_it() -> None:
    old, new = anatomy(first_step=4), from_stage(anatomy(first_step=4), WEIGHTS, 4)
    found = localise(old, new)
    assert (found.stage, found.step, found.weight, found.compared) == (
        WEIGHTS,
        4,
        "dense/kernel",
        "steps 4-6",
    )


def test_only_the_steps_both_sides_hold_are_compared() -> None:
    long_old = anatomy(10)  # a replay's, steps 1-10
    assert localise(long_old, anatomy(3)).compared == "steps 1-3"
    found = localise(long_old, from_stage(anatomy(10), LOSS, 8))
    assert (found.stage, found.step, found.compared) == (LOSS, 8, "steps 1-10")
    window = localise(anatomy(10), from_stage(anatomy(3, first_step=6), LOSS, 7))
    assert (window.first_step, window.last_step, window.stage, window.step) == (6, 8, LOSS, 7)
    one = localise(anatomy(1), anatomy(5))
    assert one.compared == "step 1"


def test_anatomies_without_a_step_in_common_localise_nothing() -> None:
    found = localise(anatomy(3), from_stage(anatomy(3, first_step=5), BATCH, 5))
    assert not found.found
    assert (found.first_step, found.last_step, found.compared) == (5, 3, "no step in common")


def test_an_anatomy_that_did_not_reproduce_its_run_is_a_caveat() -> None:
    found = localise(anatomy(matches_run=False), from_stage(anatomy(), LOSS, 2))
    assert found.stage == LOSS
    assert found.caveat == "the old side's anatomy did not train as its run did (not deterministic?)"
    both = localise(anatomy(matches_run=False), anatomy(matches_run=False))
    assert both.caveat.count("did not train as its run did") == 2
    assert localise(anatomy(matches_run=None), anatomy()).caveat == ""  # not checked: no caveat


def test_another_number_of_weights_is_a_caveat_and_the_common_ones_are_compared() -> None:
    old = anatomy()
    new = anatomy(weights=["dense/kernel", "dense/bias", "dense_1/kernel"])
    found = localise(old, new)
    assert not found.found  # the two weights both hold are equal in every stage
    assert found.caveat == "2 trainable weights before, 3 now"
    moved = localise(old, differ(new, ("gradients",), 2, column=BIAS))
    assert (moved.stage, moved.weight) == (GRADIENTS, "dense/bias")


def test_the_same_samples_reordered_are_followed_until_they_change_a_number() -> None:
    old = anatomy()
    reordered = differ(old, ("batch", "output"), 1, later=False)  # rows reordered, same sets
    quiet = localise(old, reordered)
    assert not quiet.found and quiet.reordered_since == 1
    later = localise(old, differ(reordered, ("output_set", "output", "output_sum"), 3))
    assert (later.stage, later.step, later.reordered_since) == (OUTPUT, 3, 1)
    loss = localise(old, differ(reordered, ("loss",), 1))
    assert (loss.stage, loss.reordered, loss.step) == (BATCH, LOSS, 1)
    gradient = localise(old, differ(reordered, ("gradients", "gradient_sums"), 1, column=BIAS))
    assert (gradient.stage, gradient.reordered, gradient.weight) == (BATCH, GRADIENTS, "dense/bias")
    other_samples = localise(old, differ(old, ("batch", "batch_set"), 2))
    assert (other_samples.stage, other_samples.reordered, other_samples.reordered_since) == (BATCH, "", None)


# ------------------------------------------------------------------------------ replay plans
def write_plan(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "localise-old.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def one_run(**changes: Any) -> dict[str, Any]:
    return {"case": "seed", "dtype": "float32", "test": "test_user.py::test_seed[float32]", **changes}


def test_a_missing_plan_is_named_with_who_writes_it(tmp_path: Path) -> None:
    with pytest.raises(ReplayError) as error:
        load_plan(tmp_path / "nowhere.json")
    assert str(error.value).startswith(f"{tmp_path / 'nowhere.json'}: no such replay plan")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not a readable replay plan: "),
        ({"schema": 2, "runs": []}, "not a replay plan of schema 1 (a 'runs' list)"),
        ({"runs": []}, "not a replay plan of schema 1 (a 'runs' list)"),
        ({"schema": 1, "runs": {"case": "seed"}}, "not a replay plan of schema 1 (a 'runs' list)"),
        ([1], "not a replay plan of schema 1 (a 'runs' list)"),
        ({"schema": 1, "runs": [one_run(), "seed"]}, "runs[1]: needs 'case' and 'dtype' strings"),
        ({"schema": 1, "runs": [{"case": "seed"}]}, "runs[0]: needs 'case' and 'dtype' strings"),
        ({"schema": 1, "runs": [one_run(dtype=32)]}, "runs[0]: needs 'case' and 'dtype' strings"),
        (
            {"schema": 1, "runs": [one_run(set_back={"learning_rate": "0.1"})]},
            "runs[0]: set_back 'learning_rate' is not one of loss_dtype, initial_weights",
        ),
        (
            {"schema": 1, "runs": [one_run(), one_run(last_step=-1)]},
            "runs[1]: last_step must be a whole number of steps, got -1",
        ),
        (
            {"schema": 1, "runs": [one_run(last_step="20")]},
            "runs[0]: last_step must be a whole number of steps, got '20'",
        ),
        (
            {"schema": 1, "runs": [one_run(last_step=2.5)]},
            "runs[0]: last_step must be a whole number of steps, got 2.5",
        ),
        (
            {"schema": 1, "runs": [one_run(last_step=True)]},
            "runs[0]: last_step must be a whole number of steps, got True",
        ),
        (
            {"schema": 1, "runs": [one_run(set_back=["loss_dtype"])]},
            "runs[0]: set_back must be a table of settings (loss_dtype, initial_weights), got ['loss_dtype']",
        ),
        (
            {"schema": 1, "runs": [one_run(set_back="loss_dtype")]},
            "runs[0]: set_back must be a table of settings (loss_dtype, initial_weights), got 'loss_dtype'",
        ),
        (
            {"schema": 1, "runs": [one_run(set_back={"loss_dtype": None})]},
            "runs[0]: set_back loss_dtype must be a non-empty string, got None",
        ),
    ],
)
def test_a_malformed_plan_names_the_file_and_the_field(tmp_path: Path, document: Any, message: str) -> None:
    path = write_plan(tmp_path, document)
    with pytest.raises(ReplayError) as error:
        load_plan(path)
    assert str(error.value).startswith(f"{path}: {message}")


def test_a_written_plan_reads_back(tmp_path: Path) -> None:
    plan = ReplayPlan(
        [
            Replay("seed", "float32", tmp_path / "anatomy-old", "t.py::test_seed[float32]", 13),
            Replay(
                "seed",
                "float16",
                tmp_path / "anatomy-old",
                "t.py::test_seed[float16]",
                0,
                {"loss_dtype": "float16"},
            ),
            Replay("other", "float32", tmp_path / "anatomy-old", "t.py::test_seed[float32]"),
        ]
    )
    path = tmp_path / "plan.json"
    plan.write(path)
    read = load_plan(path)
    assert read.runs == plan.runs
    assert read.tests == ["t.py::test_seed[float32]", "t.py::test_seed[float16]"]  # each once, in order
    assert read.find("seed", "float16").set_back == {"loss_dtype": "float16"}
    assert read.find("seed", "bfloat16") is None
    assert read.runs[0].anatomy_path("seed", "float32") == tmp_path / "anatomy-old" / "seed[float32].npz"


def test_a_plan_without_a_directory_keeps_its_anatomies_beside_it(tmp_path: Path) -> None:
    path = write_plan(tmp_path, {"schema": 1, "runs": [one_run()]})
    (replay,) = load_plan(path).runs
    assert (replay.directory, replay.last_step, replay.set_back) == (tmp_path, 0, {})


def test_setting_back_the_loss_dtype_and_the_initial_weights(tmp_path: Path) -> None:
    case = Case.sequential(
        "seed",
        layers=[{"class_name": "Dense", "config": {"units": 1}}],
        input_shape=(1,),
        x=[[-1.0], [1.0]],
        y=[1.0, 0.0],
        loss="binary_crossentropy",
        steps=10,
        loss_dtype="float64",
    )
    assert Replay("seed", "float32", tmp_path).apply(case) is case
    assert (
        Replay("seed", "float32", tmp_path, set_back={"loss_dtype": "float32"}).apply(case).loss_dtype
        == "float32"
    )
    saved = anatomy()
    saved.initial_weights = [np.array([[0.3]], np.float32), np.array([-0.1], np.float32)]
    saved.save(tmp_path / "seed[float32].npz")
    pinned = Replay(
        "seed", "float32", tmp_path, set_back={"initial_weights": str(tmp_path / "seed[float32].npz")}
    )
    weights = pinned.apply(case).initial_weights
    assert [w.tolist() for w in weights] == [[[pytest.approx(0.3)]], [pytest.approx(-0.1)]]
    anatomy().save(tmp_path / "bare.npz")
    bare = Replay("seed", "float32", tmp_path, set_back={"initial_weights": str(tmp_path / "bare.npz")})
    with pytest.raises(ReplayError, match=r"bare\.npz: holds no initial weights to set back"):
        bare.apply(case)


# ------------------------------------------------------------------------------ mechanisms
STEPS = list(range(1, 21))
LOSSES = [0.7 / s for s in STEPS]


def record(made: Anatomy | None = None, **changes: Any) -> RunRecord:
    """A run of 20 steps checkpointed at every step, with ``made`` as its anatomy."""
    fields: dict[str, Any] = {
        "case": "seed",
        "dtype": "float32",
        "engine": "loop",
        "test": "test_user.py::test_seed[float32]",
        "status": "passed",
        "outcome": "descending",
        "evidence": {},
        "final_loss": LOSSES[-1],
        "steps": 20,
        "target_loss": None,
        "steps_to_target": None,
        "converged": None,
        "expectation_met": None,
        "expectation_problems": [],
        "checkpoint_steps": list(STEPS),
        "checkpoint_losses": list(LOSSES),
        "steps_per_second": 1000.0,
        "wall_times": [0.02],
        "loss_dtype": "float32",
        "variable_dtype": "float32",
        "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"},
        "final_weights": {"dense/kernel (1, 1) values": [0.5], "dense/bias (1,) values": [0.1]},
        "optimizer_ran": f"keras.src.optimizers.rmsprop.RMSprop {json.dumps(RMSPROP)}",
        "loss_ran": f"keras.src.losses.losses.BinaryCrossentropy {json.dumps(BCE)}",
        "anatomy": (made if made is not None else anatomy()).to_json(),
    }
    fields.update(changes)
    return RunRecord(**fields)


def configured(base: Anatomy, **settings: str) -> Anatomy:
    """``base`` with some configuration settings changed (``loss_scaling`` for ``loss scaling``)."""
    return dataclasses.replace(
        base, configuration={**base.configuration, **{k.replace("_", " "): v for k, v in settings.items()}}
    )


def test_without_an_anatomy_a_case_is_not_localised_and_says_on_which_side() -> None:
    assert "on either side" in explain(record(anatomy={}), record(anatomy={}), 1).sentence
    old_missing = explain(record(anatomy={}), record(), 1)
    assert old_missing.key == NOT_LOCALISED
    assert old_missing.sentence.startswith("not localised: no step anatomy recorded on the old side (")
    assert "on the new side" in explain(record(), record(anatomy={"weights": []}), 1).sentence


def test_initial_weights_are_set_back_to_confirm() -> None:
    mechanism = explain(record(), record(from_stage(anatomy(), INITIALISATION, 1)), 1)
    assert mechanism.key == "initialisation"
    assert mechanism.sentence == (
        "first difference: the initial weights of dense/kernel, before any step: the same seed draws "
        "other initial values now"
    )
    assert mechanism.set_back == {"initial_weights": "old"}


def test_another_batch_is_read_with_the_shuffling_setting() -> None:
    shuffled = configured(from_stage(anatomy(), BATCH, 1), shuffling="a new order every epoch")
    mechanism = explain(record(), record(shuffled), 1)
    assert mechanism.key == "batch:off->a new order every epoch"
    assert mechanism.title == "Shuffling: off before, a new order every epoch now"
    assert mechanism.sentence == (
        "first difference: the batch at step 1, with equal weights: the shuffle gives a new order "
        "every epoch now (off before)"
    )
    same_setting = explain(record(), record(from_stage(anatomy(), BATCH, 2)), 2)
    assert same_setting.key == "batch"
    assert same_setting.sentence.endswith(
        "the batch at step 2, with equal weights: the data pipeline draws another batch now"
    )
    assert same_setting.set_back == {}


def test_the_same_samples_reordered_name_the_number_they_rounded_otherwise() -> None:
    old = anatomy()
    reordered = differ(differ(old, ("batch", "output"), 1, later=False), ("loss",), 1)
    mechanism = explain(record(), record(configured(reordered, shuffling="a new order every epoch")), 1)
    assert mechanism.sentence.startswith(
        "first difference: the batch at step 1 holds the same samples in another order, which rounds "
        "the loss differently (0.7 -> 0.7"
    )
    assert mechanism.sentence.endswith(": the shuffle gives a new order every epoch now (off before)")
    quiet_then_loss = differ(differ(old, ("batch", "output"), 1, later=False), ("loss",), 2)
    later = explain(record(), record(quiet_then_loss), 2)
    assert later.sentence.startswith("first difference: the loss at step 2, with equal weights")
    assert later.sentence.endswith(
        "(the batches hold their samples in another order from step 1, which changed no number before this)"
    )


def test_weights_that_already_differ_are_not_localised() -> None:
    window = anatomy(first_step=4)
    mechanism = explain(record(window), record(from_stage(window, WEIGHTS, 4)), 2)
    assert mechanism.key == NOT_LOCALISED
    assert mechanism.sentence == (
        "not localised: the weights entering step 4 already differ (dense/kernel first); the "
        "difference began before the compared steps 4-6"
    )


def test_another_output_is_read_with_the_dtype_policy() -> None:
    policy = configured(
        from_stage(anatomy(), OUTPUT, 1), dtype_policy="mixed_float16", output_dtype="float16"
    )
    mechanism = explain(record(), record(policy), 1)
    assert mechanism.key == "dtype policy:float32->mixed_float16"
    assert mechanism.sentence.endswith(
        "the model's output at step 1, with equal weights and batch: the dtype policy is mixed_float16 "
        "now (float32 before)"
    )
    forward = explain(record(), record(from_stage(anatomy(), OUTPUT, 2)), 2)
    assert forward.key == "forward"
    assert "(sum 0.5 -> 0.500000477): a layer's arithmetic changed" in forward.sentence


def test_a_wider_loss_dtype_is_set_back_to_confirm() -> None:
    new = record(from_stage(anatomy(), LOSS, 1), loss_dtype="float64")
    mechanism = explain(record(), new, 1)
    assert mechanism.key == "loss-dtype-wider:float64:output"
    assert mechanism.title == "The loss is computed in float64 now, in the output's dtype before"
    assert mechanism.sentence == (
        "first difference: the loss at step 1, with equal weights, batch and output (0.7 -> 0.700000668): "
        "the loss is computed in float64 now (float32 before)"
    )
    assert mechanism.set_back == {"loss_dtype": "float32"}
    half = anatomy(configuration={**CONFIGURATION, "output dtype": "float16"})
    narrower_before = explain(record(half, loss_dtype="float16"), record(from_stage(half, LOSS, 1)), 1)
    assert narrower_before.key == "loss-dtype-wider:float32:output"


def test_a_narrower_loss_dtype_says_what_the_model_loses() -> None:
    new = record(from_stage(anatomy(), LOSS, 2), loss_dtype="float16")
    mechanism = explain(record(), new, 2)
    assert mechanism.key == "loss-dtype-narrower:float32->float16"
    assert mechanism.sentence.endswith("a float32 model's loss is computed in float16 now (float32 before)")
    assert mechanism.set_back == {"loss_dtype": "float32"}


def test_another_loss_class_or_the_same_loss_computing_otherwise() -> None:
    other = configured(from_stage(anatomy(), LOSS, 1), loss="keras.src.losses.losses.MeanSquaredError")
    assert explain(record(), record(other), 1).sentence.endswith(
        "MeanSquaredError computes it now (BinaryCrossentropy before)"
    )
    arithmetic = explain(record(), record(from_stage(anatomy(), LOSS, 3)), 3)
    assert arithmetic.key == "loss-arithmetic"
    assert arithmetic.sentence.endswith("the loss's arithmetic changed (still float32)")
    assert arithmetic.set_back == {}


def test_other_gradients_of_an_equal_loss_are_the_backward_pass() -> None:
    mechanism = explain(record(), record(from_stage(anatomy(), GRADIENTS, 2, column=BIAS)), 2)
    assert mechanism.key == "gradients"
    assert mechanism.sentence.startswith(
        "first difference: the gradient of dense/bias at step 2, with equal loss (sum 0.021 -> 0.021"
    )
    assert mechanism.sentence.endswith("the backward pass computes differently now")


def optimizer_ran(path: str, **config: Any) -> str:
    return f"{path} {json.dumps({**RMSPROP, **config})}"


def test_an_update_names_the_optimizer_class_its_settings_or_its_arithmetic() -> None:
    update = from_stage(anatomy(), UPDATE, 1)
    adam = configured(update, optimizer="keras.src.optimizers.adam.Adam")
    assert explain(record(), record(adam), 1).sentence == (
        "first difference: the optimizer's update of dense/kernel at step 1 (gradients equal): the "
        "optimizer is Adam now (RMSprop before)"
    )
    rho = record(update, optimizer_ran=optimizer_ran("keras.src.optimizers.rmsprop.RMSprop", rho=0.8))
    settings = explain(record(), rho, 1)
    assert settings.key == "optimizer-config:RMSprop"
    assert settings.sentence.endswith("RMSprop's settings changed (rho 0.9 -> 0.8)")
    arithmetic = explain(record(), record(update), 1)
    assert arithmetic.key == "optimizer:RMSprop"
    assert arithmetic.sentence.endswith("(gradients equal): RMSprop's arithmetic changed")


def test_a_setting_read_back_in_float32_or_known_to_one_version_only_is_no_change() -> None:
    update = from_stage(anatomy(), UPDATE, 2)
    old = record(optimizer_ran=optimizer_ran("keras.src.optimizers.rmsprop.RMSprop", learning_rate=0.01))
    read_back = float(np.float32(0.01))  # 0.009999999776482582
    new = record(
        update,
        optimizer_ran=optimizer_ran(
            "keras.src.optimizers.rmsprop.RMSprop", learning_rate=read_back, use_ema=False
        ),
    )
    assert explain(old, new, 2).key == "optimizer:RMSprop"


def test_the_legacy_optimizer_before_is_said() -> None:
    legacy = anatomy(
        configuration={**CONFIGURATION, "optimizer": "keras.optimizers.legacy.rmsprop.RMSprop (legacy)"}
    )
    new = record(from_stage(anatomy(), UPDATE, 1))
    assert explain(record(legacy), new, 1).sentence.endswith(
        "RMSprop's arithmetic changed (the legacy optimizer before)"
    )


def test_equal_first_steps_leave_a_late_parting_for_the_replay() -> None:
    mechanism = explain(record(), record(), 13)
    assert mechanism.key == NOT_LOCALISED
    assert mechanism.sentence == (
        "not localised: steps 1-3 are bit-identical on both sides and the histories part at step 13; "
        "the gate's replay takes every step up to it apart"
    )
    assert "histories part later;" in explain(record(), record(), None).sentence


def test_longer_anatomies_from_a_replay_replace_the_recorded_ones() -> None:
    mechanism = explain(
        record(), record(), 13, old_anatomy=anatomy(13), new_anatomy=from_stage(anatomy(13), UPDATE, 12)
    )
    assert mechanism.sentence.startswith(
        "first difference: the optimizer's update of dense/kernel at step 12"
    )


def test_a_caveat_follows_the_sentence() -> None:
    mechanism = explain(record(), record(from_stage(anatomy(matches_run=False), LOSS, 1)), 1)
    assert mechanism.sentence.endswith(
        "(caveat: the new side's anatomy did not train as its run did (not deterministic?))"
    )


def test_mechanisms_are_grouped_largest_first_and_unlocalised_last() -> None:
    loss = explain(record(), record(from_stage(anatomy(), LOSS, 1)), 1)
    late = explain(record(), record(), 10)
    init = explain(record(), record(from_stage(anatomy(), INITIALISATION, 1)), 1)
    groups = group(
        [("a [float32]", late), ("b [float32]", loss), ("c [float32]", init), ("d [float16]", init)]
    )
    assert [(key, labels) for key, _, labels in groups] == [
        ("initialisation", ["c [float32]", "d [float16]"]),
        ("loss-arithmetic", ["b [float32]"]),
        (NOT_LOCALISED, ["a [float32]"]),
    ]


# ------------------------------------------------------------------------------ the verdict
def results(*runs: RunRecord) -> Results:
    return Results(runs=list(runs), machine={"node": "ci"}, created="now")


def parted(made: Anatomy, from_step: int = 1, **changes: Any) -> RunRecord:
    """A new side whose history parts from ``from_step`` (and whose final weights differ)."""
    losses = [v * (1.01 if s >= from_step else 1.0) for s, v in zip(STEPS, LOSSES)]
    weights = {"dense/kernel (1, 1) values": [0.6], "dense/bias (1,) values": [0.1]}
    return record(made, checkpoint_losses=losses, final_loss=losses[-1], final_weights=weights, **changes)


def test_the_verdict_prints_each_changed_case_s_mechanism_and_the_groups() -> None:
    verdict = compare_results(
        results(record(), record(case="same")),
        results(parted(from_stage(anatomy(), LOSS, 1), loss_dtype="float64"), record(case="same")),
    )
    rows = {row.case: row for row in verdict.rows}
    assert rows["same"].mechanism is None  # the same run: nothing to explain
    lines = format_table(verdict)
    assert (
        "why: seed [float32]: first difference: the loss at step 1, with equal weights, batch and output "
        "(0.7 -> 0.700000668): the loss is computed in float64 now (float32 before)"
    ) in lines
    assert "mechanisms: 1 explain the 1 changed cases" in lines
    assert (
        "  1. The loss is computed in float64 now, in the output's dtype before (1): seed [float32]" in lines
    )
    text = markdown(verdict)
    assert "### Mechanisms: 1 explain 1 changed cases" in text
    assert "### First differences" in text
    assert "- **seed [float32]** (FAIL): first difference: the loss at step 1" in text


def confirmed_by(directory: Path, replayed: RunRecord) -> ReplayEvidence:
    evidence = ReplayEvidence(directory)
    evidence.confirmations[replayed.key] = replayed
    return evidence


def test_a_replay_that_trains_as_the_old_version_confirms_the_mechanism(tmp_path: Path) -> None:
    old, new = record(), parted(from_stage(anatomy(), LOSS, 1), loss_dtype="float64")
    replayed = record(set_back={"loss_dtype": "float32"})
    verdict = compare_results(results(old), results(new), replays=confirmed_by(tmp_path, replayed))
    mechanism = verdict.rows[0].mechanism
    assert mechanism is not None and mechanism.confirmed is True
    assert mechanism.confirmation == (
        "Confirmed by replay: with the loss dtype set back to float32, the new version trains bit for "
        "bit as the old one (20 checkpoints and the final weights equal)"
    )
    assert any(line.endswith(f". {mechanism.confirmation}") for line in format_table(verdict))


def test_a_replay_that_still_parts_says_from_where_and_what_differs_next(tmp_path: Path) -> None:
    old, new = record(), parted(from_stage(anatomy(), LOSS, 1), loss_dtype="float64")
    replayed = parted(anatomy(), from_step=15, set_back={"loss_dtype": "float32"})
    evidence = confirmed_by(tmp_path, replayed)
    evidence.old_anatomies[("seed", "float32")] = anatomy(15)
    evidence.confirm_anatomies[("seed", "float32")] = from_stage(anatomy(15), GRADIENTS, 14)
    mechanism = compare_results(results(old), results(new), replays=evidence).rows[0].mechanism
    assert mechanism is not None and mechanism.confirmed is False
    assert mechanism.confirmation.startswith(
        "Replay: with the loss dtype set back to float32, the histories still part (from step 15, step 1 "
        "before); next first difference: the gradient of dense/kernel at step 14"
    )
    # the mechanism the first one masked is the case's too, and grouped with it
    assert [m.key for m in mechanism.all] == ["loss-dtype-wider:float64:output", "gradients"]


def test_an_ordinary_run_among_the_confirmations_confirms_nothing(tmp_path: Path) -> None:
    old, new = record(), parted(from_stage(anatomy(), LOSS, 1), loss_dtype="float64")
    mechanism = (
        compare_results(results(old), results(new), replays=confirmed_by(tmp_path, record()))
        .rows[0]
        .mechanism
    )
    assert mechanism is not None and (mechanism.confirmed, mechanism.confirmation) == (None, "")


# ------------------------------------------------------------------------------ planning the replays
def test_the_localise_round_replays_late_partings_on_both_sides_and_set_backs_on_the_old(
    tmp_path: Path,
) -> None:
    old = results(record(), record(case="pinned"), record(case="same"))
    new = results(
        parted(anatomy(), from_step=13),
        parted(from_stage(anatomy(), LOSS, 1), case="pinned", loss_dtype="float64"),
        record(case="same"),
    )
    plans = plan_round("localise", old, new, tmp_path)
    assert [(r.case, r.last_step, r.directory.name, r.set_back) for r in plans["old"].runs] == [
        ("pinned", 20, "anatomy-old", {}),
        ("seed", 13, "anatomy-old", {}),
    ]
    assert [(r.case, r.last_step, r.directory.name) for r in plans["new"].runs] == [
        ("seed", 13, "anatomy-new")
    ]


def test_the_confirm_round_sets_back_what_the_mechanism_names(tmp_path: Path) -> None:
    old = results(record(), record(case="init"))
    new = results(
        parted(from_stage(anatomy(), LOSS, 1), loss_dtype="float64"),
        parted(from_stage(anatomy(), INITIALISATION, 1), case="init"),
    )
    plans = plan_round("confirm", old, new, tmp_path)
    # the initial weights come from the old side's replay, which has not run: not planned yet
    assert [(r.case, r.set_back, r.directory.name) for r in plans["new"].runs] == [
        ("seed", {"loss_dtype": "float32"}, "anatomy-confirm")
    ]
    saved = anatomy()
    saved.initial_weights = [np.zeros((1, 1), np.float32), np.zeros(1, np.float32)]
    saved.save(tmp_path / "anatomy-old" / "init[float32].npz")
    again = plan_round("confirm", old, new, tmp_path)
    assert again["new"].find("init", "float32").set_back == {
        "initial_weights": str(tmp_path / "anatomy-old" / "init[float32].npz")
    }
    with pytest.raises(ValueError, match="unknown replay round 'later': one of localise, confirm"):
        plan_round("later", old, new, tmp_path)


def test_a_written_round_is_a_plan_the_replay_reads(tmp_path: Path) -> None:
    from pytest_convergence.gate import results as results_file

    results_file.write(tmp_path / "old.json", results(record()))
    results_file.write(tmp_path / "new.json", results(parted(anatomy(), from_step=13)))
    counts = write_round("localise", tmp_path / "old.json", tmp_path / "new.json", tmp_path / "replays")
    assert counts == {"old": 1, "new": 1}
    plan = load_plan(plan_path(tmp_path / "replays", "localise", "new"))
    assert [(r.case, r.dtype, r.test, r.last_step) for r in plan.runs] == [
        ("seed", "float32", "test_user.py::test_seed[float32]", 13)
    ]
    assert plan.runs[0].directory == tmp_path / "replays" / "anatomy-new"


def test_other_gradients_of_a_loss_in_another_dtype_are_the_loss_dtype() -> None:
    """Keras 3 hands the tracker a float32 loss: a float64 loss often rounds to the same value
    while its gradient does not, so the first digest to differ is a gradient's."""
    new = record(from_stage(anatomy(), GRADIENTS, 1, column=BIAS), loss_dtype="float64")
    mechanism = explain(record(), new, 1)
    assert mechanism.key == "loss-dtype-wider:float64:output"
    assert mechanism.sentence.startswith(
        "first difference: the gradient of dense/bias at step 1, with equal weights, batch and output "
        "and a loss that rounds to the same value ("
    )
    assert mechanism.sentence.endswith("the loss is computed in float64 now (float32 before)")
    assert mechanism.set_back == {"loss_dtype": "float32"}


def test_values_one_float64_ulp_apart_are_printed_apart() -> None:
    base = anatomy()
    changed = from_stage(base, LOSS, 1)
    changed.loss[0] = np.nextafter(base.loss[0], 2.0)
    sentence = explain(record(base), record(changed), 1).sentence
    assert f"({base.loss[0]:.17g} -> {changed.loss[0]:.17g})" in sentence


def test_a_malformed_anatomy_in_a_results_file_is_named_with_its_run(tmp_path: Path) -> None:
    from pytest_convergence.gate import results

    good = record(anatomy())
    document = json.loads(Results(runs=[good, dataclasses.replace(good, dtype="float16")]).to_json())
    document["runs"][1]["anatomy"]["loss"] = document["runs"][1]["anatomy"]["loss"][:-1]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    with pytest.raises(results.ResultsError) as error:
        results.load(path)
    assert str(error.value).startswith(f"{path}: runs[1].anatomy is malformed (batch: ")


def test_batches_with_other_samples_after_the_first_difference_are_a_further_mechanism() -> None:
    """Another shuffle is a mechanism of its own even where an earlier difference came first."""
    new = from_stage(anatomy(), LOSS, 1)
    new.batch[2] += 7
    new.batch_set[2] += 7
    shuffled = configured(new, shuffling="the same order every epoch")
    mechanism = explain(
        record(configured(anatomy(), shuffling="a new order every epoch")), record(shuffled), 1
    )
    assert mechanism.key == "loss-arithmetic"
    assert [m.key for m in mechanism.also] == ["batch:a new order every epoch->the same order every epoch"]
    assert mechanism.also[0].sentence == (
        "also: the batch at step 3 holds other samples: the shuffle gives the same order every epoch now "
        "(a new order every epoch before)"
    )
    from pytest_convergence.gate.verdict_text import mechanism_sentence

    assert mechanism_sentence(mechanism).endswith(f"; {mechanism.also[0].sentence}")
    groups = group([("x [float32]", mechanism)])
    assert [key for key, _, _ in groups] == [
        "batch:a new order every epoch->the same order every epoch",
        "loss-arithmetic",
    ]
    reordered = from_stage(anatomy(), LOSS, 1)
    reordered.batch[2] += 7  # the same samples in another order: no further mechanism
    assert explain(record(), record(reordered), 1).also == []


def with_layers(base: Anatomy, names: list[str], differing: int | None = None) -> Anatomy:
    """``base`` with layer outputs recorded, the ``differing`` one changed at every step."""
    changed = dataclasses.replace(base, layers=list(names))
    digests = np.arange(len(base.loss) * len(names), dtype=np.int64).reshape(len(base.loss), len(names))
    if differing is not None:
        digests = digests.copy()
        digests[:, differing:] += 7
    changed.layer_outputs, changed.layer_sets = digests, digests + 1000
    return changed


def test_the_first_layer_whose_output_differs_is_named_and_its_class_is_the_mechanism() -> None:
    names = ["dense (Dense)", "dense_1 (Dense)"]
    old = with_layers(anatomy(), names)
    new = with_layers(from_stage(anatomy(), OUTPUT, 1), names, differing=1)
    found = localise(old, new)
    assert (found.stage, found.step, found.layer) == (OUTPUT, 1, "dense_1 (Dense)")
    mechanism = explain(record(old), record(new), 1)
    assert mechanism.key == "forward:Dense"
    assert mechanism.sentence.startswith(
        "first difference: the output of dense_1 (Dense) at step 1, with equal weights, batch and layers "
        "before it"
    )
    assert mechanism.sentence.endswith("Dense's arithmetic changed")
    assert Anatomy.from_json(json.loads(json.dumps(new.to_json()))).layers == names
    # recorded on one side only: the output stage, without a layer
    assert localise(anatomy(), new).layer is None


def test_a_replay_s_first_steps_are_checked_against_the_results_file_s_checkpoints() -> None:
    made = dataclasses.replace(anatomy(), matches_run=None)  # a replay that trained no run
    steps = [int(s) for s in made.steps]
    assert made.check_checkpoints([*steps, 99], [*map(float, made.loss), 0.5]) is True
    other = dataclasses.replace(anatomy(), matches_run=None)
    losses = list(map(float, other.loss))
    losses[1] = float(np.nextafter(losses[1], 1.0))
    assert other.check_checkpoints(steps, losses) is False
    assert "anatomy did not train as its run did" in localise(other, anatomy()).caveat
    assert dataclasses.replace(anatomy(), matches_run=None).check_checkpoints([99], [0.5]) is None


def test_ema_settings_without_ema_are_no_change_of_settings() -> None:
    """Keras 2's legacy RMSprop says ema_overwrite_frequency 100, Keras 3's None: with use_ema off
    on both, that is not what changed the update."""
    new = from_stage(anatomy(), UPDATE, 1)
    before = record(
        anatomy(),
        optimizer_ran=optimizer_ran("keras.src.optimizers.rmsprop.RMSprop", ema_overwrite_frequency=100),
    )
    after = record(
        new, optimizer_ran=optimizer_ran("keras.src.optimizers.rmsprop.RMSprop", ema_overwrite_frequency=None)
    )
    assert explain(before, after, 1).key == "optimizer:RMSprop"


def test_gradients_a_loss_scale_apart_are_loss_scaling() -> None:
    """Keras 2's LossScaleOptimizer hands its optimizer unscaled gradients, Keras 3's scaled ones."""
    new = from_stage(anatomy(), GRADIENTS, 1, column=BIAS)
    new.gradient_sums[0, BIAS] = anatomy().gradient_sums[0, BIAS] * 32768 * (1 + 1e-4)
    scaled = explain(
        record(configured(anatomy(), loss_scaling="on")), record(configured(new, loss_scaling="on")), 1
    )
    assert scaled.key == "loss-scaling"
    assert scaled.sentence.endswith(
        "2^15 apart): the optimizer receives the gradients scaled by the loss scale now"
    )
    assert explain(record(), record(new), 1).key == "gradients"  # no loss scaling: the backward pass


def test_a_dropout_layer_that_differs_draws_other_random_numbers() -> None:
    names = ["dense (Dense)", "dropout (Dropout)"]
    old = with_layers(anatomy(), names)
    new = with_layers(from_stage(anatomy(), OUTPUT, 1), names, differing=1)
    mechanism = explain(record(old), record(new), 1)
    assert mechanism.key == "random:Dropout"
    assert mechanism.sentence.endswith("Dropout draws other random numbers from the same seed now")


def test_a_missing_replays_directory_is_named_not_ignored(tmp_path: Path) -> None:
    from pytest_convergence.errors import ConvergenceError

    with pytest.raises(ConvergenceError, match=r"--replays .*nowhere: no such directory; give the directory"):
        ReplayEvidence.load(tmp_path / "nowhere")
