"""End-to-end tests: real (small) Keras models trained with real TensorFlow, and the plugin run as a
user runs it (``pytester``). Slower: ``./dev unit`` leaves them out."""

from __future__ import annotations

import pytest

KERAS2_PATHS: dict[str, str] = {
    "test_keras2.py": "what each Keras does, side by side",
    "test_callbacks.py::test_loop_is_bit_identical_to_fit_with_callbacks": "Keras 2's fit and CallbackList",
    "test_snapshot_workflow.py": "syrupy's internals (snapshot/syrupy_compat.py) on the oldest syrupy, 6.0",
    "test_engine.py::test_loop_is_bit_identical_to_fit_on_the_seed_case": "Keras 2's train_step and fit",
    "test_engine.py::test_loop_is_bit_identical_to_fit_with_shuffled_batches": "Keras 2's data adapter",
    "test_engine.py::test_a_step_budget_that_ends_mid_epoch_matches_fit": "Keras 2's epoch iterator",
    "test_engine.py::test_a_run_records_what_it_ran_on_and_how_fast": "Keras 2's loss dtype",
    "test_engine.py::test_a_missing_private_keras_api_is_an_unsupported_keras_version_not_a_data_error": (
        "Keras 2's private APIs"
    ),
    "test_real_models.py::test_loop_is_bit_identical_to_fit_on_the_real_models": "Keras 2's layers and fit",
    "test_user_data.py::test_loop_and_fit_train_bit_for_bit_as_the_users_own_fit": (
        "Keras 2's DataHandler on datasets, Sequences and generators, and its class weights"
    ),
    "test_user_data.py::test_every_run_of_a_reshuffling_dataset_trains_on_the_batches_fit_drew_first": (
        "Keras 2's DataHandler reshuffling a dataset"
    ),
    "test_explain.py::test_explain_prints_the_run_the_diagnosis_and_the_evidence_and_plots_it": (
        "Keras 2's loss dtype in explain"
    ),
    "test_gate_sees_everything.py::test_a_legacy_optimizer_against_the_new_one_is_named_in_the_verdict": (
        "Keras 2's legacy optimizer"
    ),
    "test_plugin.py::test_with_the_flag_each_dtype_trains_and_the_summary_shows_outcomes": (
        "Keras 2's RMSprop outcomes"
    ),
    "test_probe_evidence.py::"
    "test_saturated_float16_probabilities_leave_the_float32_loss_a_gradient_of_exactly_0": (
        "Keras 2's loss dtype in the probes"
    ),
    "test_probe_evidence.py::"
    "test_a_loss_given_by_name_is_computed_in_floatx_on_keras_3_and_the_outputs_dtype_on_keras_2": (
        "Keras 2's loss dtype in the probes"
    ),
    "test_spec.py::test_an_unmet_expectation_fails_with_the_outcomes_and_the_diagnosis": "Keras 2's RMSprop",
    "test_snapshot_header_diff.py": "Keras 2's optimizer config in the snapshot header",
    "test_spec.py::test_a_spec_judges_validation_metrics_and_keras_refusing_a_dtype": (
        "Keras 2 trains what Keras 3 refuses"
    ),
    "test_user_models.py::"
    "test_a_subclassed_model_built_or_not_trains_on_every_engine_and_loop_is_fit_bit_for_bit": (
        "Keras 2's build of a subclassed model"
    ),
    "test_user_models.py::test_a_users_own_train_step_and_compute_loss_match_fit": "Keras 2's compiled_loss",
    "test_user_models.py::test_a_train_step_that_bypasses_the_loss_tracker_is_named_with_what_to_change": (
        "Keras 2's compute_loss without compiled_loss"
    ),
    "test_user_models.py::test_a_custom_layers_own_float32_variable_in_a_float16_run_is_named_or_recorded": (
        "Keras 2's variable dtypes"
    ),
    "test_user_models.py::test_keras_own_layers_keep_the_variables_keras_gives_them": (
        "Keras 2's BatchNormalization dtypes"
    ),
}
"""The end-to-end tests that exercise what differs on Keras 2 (backend/keras_adapter.py's other
branch, Keras 2's numerics) or on the oldest dependencies CI pins with it (syrupy 6.0): a file, or
a file's test. They are marked ``keras2``; CI's TensorFlow 2.15.1 environment runs only these
(``pytest -m keras2``), everything else runs once, on Keras 3 (docs/developing.md)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        file = item.path.name
        test = f"{file}::{getattr(item, 'originalname', item.name)}"
        if file in KERAS2_PATHS or test in KERAS2_PATHS:
            item.add_marker(pytest.mark.keras2)
