"""The summary warns when ``xla`` decided an outcome at the dtype's precision edge, where its
reordered arithmetic can give another outcome than ``loop`` (docs/engines.md): a user running
``--convergence-engine=xla`` is told to confirm with ``loop``; a ``loop`` session is not."""

from __future__ import annotations

import textwrap

import pytest
from factories import keras3_dynamics

USER_TESTS = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    @pytest.mark.convergence(dtypes=["bfloat16", "float32"])
    def test_seed(convergence_train):
        convergence_train(Case.sequential(
            "seed",
            layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
            x=[[-1.0], [1.0]], y=[1.0, 0.0],
            loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
            optimizer="rmsprop", steps=50, seed=0,
        ))
    """
)


@keras3_dynamics
@pytest.mark.parametrize("engine", ["xla", "loop"])
def test_an_xla_outcome_at_the_precision_edge_is_flagged(pytester: pytest.Pytester, engine: str) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("--convergence", f"--convergence-engine={engine}")
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    # bfloat16 at RMSprop's default learning rate stalls from step 1; float32 descends
    note = [line for line in out.splitlines() if line.startswith("xla: ")]
    if engine == "loop":
        assert note == []
        return
    assert len(note) == 1
    assert note[0].startswith("xla: 1 run(s) ended at their dtype's precision edge (seed[bfloat16] stalled)")
    assert "confirm with --convergence-engine=loop" in note[0]
