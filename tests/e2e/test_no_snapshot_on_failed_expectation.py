"""Under ``--snapshot-update``, a test whose expectation failed writes no snapshot, a spec file's as
a Python test's: a reviewed snapshot is of a run that met its expectations (issue 22). The stored
one, if any, is left as it was (neither rewritten nor removed as unused)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from factories import seed_spec

SPEC = seed_spec(
    """name = "seed"
dtypes = ["float32"]
steps = 40
seed = 0
""",
    """
[expect.float32]
final_loss_below = LIMIT
""",
)
PYTHON = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    seed = Case.sequential(
        "seed-py",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
        steps=STEPS, seed=0,
    )

    @pytest.mark.convergence(dtypes=["float32"])
    def test_seed(convergence_train, convergence_snapshot):
        run = convergence_train(seed)
        run.expect(final_loss_below=LIMIT)
        assert run == convergence_snapshot
    """
)


def snapshots(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(root.rglob("*.convergence.txt"))}


def test_a_failed_expectation_writes_no_snapshot_and_keeps_the_stored_one(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makefile(".convergence.toml", seed=SPEC.replace("LIMIT", "1e-30"))
    user_suite.makepyfile(test_user=PYTHON.replace("LIMIT", "1e-30").replace("STEPS", "40"))
    result = user_suite.runpytest("--convergence", "--snapshot-update")
    result.assert_outcomes(failed=2)
    assert snapshots(user_suite.path) == {}
    assert "generated" not in result.stdout.str()

    # met: both written
    user_suite.makefile(".convergence.toml", seed=SPEC.replace("LIMIT", "10.0"))
    user_suite.makepyfile(test_user=PYTHON.replace("LIMIT", "10.0").replace("STEPS", "40"))
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=2)
    stored = snapshots(user_suite.path)
    assert sorted(stored) == [
        "seed[float32].convergence.txt",
        "test_seed[float32].convergence.txt",
    ]

    # another history that fails its expectation: neither rewritten nor removed
    user_suite.makefile(
        ".convergence.toml", seed=SPEC.replace("LIMIT", "1e-30").replace("steps = 40", "steps = 30")
    )
    user_suite.makepyfile(test_user=PYTHON.replace("LIMIT", "1e-30").replace("STEPS", "30"))
    result = user_suite.runpytest("--convergence", "--snapshot-update")
    result.assert_outcomes(failed=2)
    assert snapshots(user_suite.path) == stored
