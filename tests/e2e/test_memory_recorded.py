"""Peak memory end to end (issue 25): a real tiny training records its host peak, every repeat's,
in the results file the gate reads."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    SEED = Case.sequential(
        "seed",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 0.01}},
        steps=300, seed=0,
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_seed(convergence_train):
        convergence_train(SEED)
    """
)


def test_a_training_records_its_peak_memory_for_every_repeat(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=SUITE)
    result = user_suite.runpytest("--convergence", "--convergence-repeat=3", "--convergence-results=r.json")
    result.assert_outcomes(passed=1)
    (run,) = json.loads((user_suite.path / "r.json").read_text())["runs"]
    assert len(run["host_peak_bytes"]) == len(run["host_growth_bytes"]) == 3
    assert all(peak > 0 for peak in run["host_peak_bytes"])
    assert all(growth >= 0 for growth in run["host_growth_bytes"])
    assert run["memory_method"] == ("clear_refs" if sys.platform == "linux" else run["memory_method"])
    assert run["device_peak_bytes"] == [] and run["device_memory_method"] == ""  # no GPU here
