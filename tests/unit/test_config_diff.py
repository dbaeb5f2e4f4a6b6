"""What differs between two recorded configurations (config_diff) and between a snapshot's stored
header and a new run's (snapshot.compare.header_changes)."""

from __future__ import annotations

import json

from pytest_convergence.config_diff import (
    ran_changes,
    same_setting,
    setting_differences,
    shared_config_changes,
)
from pytest_convergence.snapshot.compare import header_changes

RMSPROP = "keras.src.optimizers.rmsprop.RMSprop"


def ran(path: str, **config: object) -> str:
    return f"{path} {json.dumps(config, sort_keys=True)}"


def header(**changes: str) -> dict[str, str]:
    base = {
        "test": "test_user.py::test_seed[float32]",
        "case": "seed",
        "dtype": "float32",
        "engine": "loop",
        "steps": "100",
        "seed": "0",
        "optimizer": "RMSprop(learning_rate=2.55)",
        "optimizer ran": ran(RMSPROP, learning_rate=2.549999952316284, rho=0.9, name="rmsprop"),
        "loss ran": ran("keras.src.losses.losses.BinaryCrossentropy", from_logits=True),
        "loss dtype": "float32",
        "weights dtype": "float32",
        "versions": "python 3.11.7, numpy 2.4.6, tensorflow 2.21.0, keras 3.15.1",
        "keras": "Keras 3 (keras 3.15.1, tensorflow backend)",
        "platform": "linux-x86_64",
        "machine": "AMD EPYC (AuthenticAMD); sse4_1 avx2; 2 cpus; intra-op threads default",
        "fingerprint": "8951eabf89d8",
        "tolerance": "rtol=0.0001",
        "calibrated": "rtol=3.0",
    }
    return {**base, **{key.replace("_", " "): value for key, value in changes.items()}}


def test_the_same_header_names_nothing() -> None:
    assert header_changes(header(), header()) == []


def test_the_optimizer_config_is_named_in_float32_short_form_and_first() -> None:
    new = header(
        optimizer_ran=ran(RMSPROP, learning_rate=1.0, rho=0.8, name="other"),
        optimizer="RMSprop(learning_rate=1)",
        engine="xla",
        calibrated="rtol=9",
        test="elsewhere",
    )
    assert header_changes(header(), new) == [
        "optimizer RMSprop learning_rate 2.55 -> 1, rho 0.9 -> 0.8",
        "engine loop -> xla",
    ]


def test_another_class_a_new_key_and_a_loss_change() -> None:
    new = header(optimizer_ran=ran("keras.src.optimizers.adam.Adam", learning_rate=2.549999952316284))
    assert header_changes(header(), new) == [f"optimizer {RMSPROP} -> keras.src.optimizers.adam.Adam"]
    assert ran_changes("optimizer", ran(RMSPROP, rho=0.9), ran(RMSPROP, rho=0.9, clipnorm=1.0)) == [
        "optimizer RMSprop clipnorm (none) -> 1"
    ]
    new = header(loss_ran=ran("keras.src.losses.losses.BinaryCrossentropy", from_logits=False))
    assert header_changes(header(), new) == ["loss BinaryCrossentropy from_logits True -> False"]


def test_versions_one_package_at_a_time_then_the_machine_part_that_changed() -> None:
    new = header(
        versions="python 3.11.7, numpy 2.4.6, tensorflow 2.15.1, keras 2.15.0",
        keras="Keras 2 (tf_keras 2.15.0, tensorflow backend)",
        machine="AMD EPYC (AuthenticAMD); sse4_1 avx2 avx512f; 4 cpus; intra-op threads default",
        fingerprint="0123456789ab",
        dtype_mismatch="dense: float32",
    )
    assert header_changes(header(), new) == [
        "dtype mismatch (none) -> dense: float32",
        "tensorflow 2.21.0 -> 2.15.1",
        "keras 3.15.1 -> 2.15.0",
        "machine sse4_1 avx2 -> sse4_1 avx2 avx512f",
        "machine 2 cpus -> 4 cpus",
    ]


def test_a_fingerprint_alone_is_named() -> None:
    assert header_changes(header(), header(fingerprint="0123456789ab")) == [
        "fingerprint 8951eabf89d8 -> 0123456789ab"
    ]


def test_without_what_ran_the_optimizer_description_is_compared() -> None:
    old, new = header(optimizer_ran=""), header(optimizer_ran="", optimizer="RMSprop(learning_rate=1)")
    assert header_changes(old, new) == ["optimizer RMSprop(learning_rate=2.55) -> RMSprop(learning_rate=1)"]


def test_the_gate_s_comparisons_are_unchanged() -> None:
    assert same_setting(2.55, 2.549999952316284) and not same_setting(2.55, 2.56)
    assert (
        shared_config_changes(ran(RMSPROP, rho=0.9, use_ema=False), ran(RMSPROP, rho=0.8)) == "rho 0.9 -> 0.8"
    )
    assert shared_config_changes(ran(RMSPROP, ema_momentum=0.9), ran(RMSPROP, ema_momentum=0.8)) == ""
    assert setting_differences({"a": "1", "b": ""}, {"a": "2", "b": "x", "c": "3"}) == {"a": ("1", "2")}
    assert setting_differences({"b": ""}, {"b": "x"}, one_sided=True) == {"b": ("(none)", "x")}


def test_a_line_an_older_snapshot_did_not_record_is_named_as_such() -> None:
    old = {key: value for key, value in header().items() if key != "machine"}
    new = header(engine="fit")
    assert header_changes(old, new) == [
        "engine loop -> fit",
        "machine (not recorded) -> AMD EPYC (AuthenticAMD); sse4_1 avx2; 2 cpus; intra-op threads default",
    ]
