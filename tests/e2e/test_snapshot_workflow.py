"""Loss-history snapshots end to end, as a user runs them: the syrupy workflow with tolerance."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_convergence import Case

    LEARNING_RATE = 2.55
    seed = Case.sequential(
        "seed-logistic",
        layers=[{"class_name": "Dense", "config": {"units": 1}}], input_shape=(1,),
        x=[[-1.0], [1.0]], y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": LEARNING_RATE}},
        steps=300, seed=0,
    )

    @pytest.mark.convergence(dtypes=["float16", "float32"])
    def test_seed(convergence_train, convergence_snapshot):
        assert convergence_train(seed) == convergence_snapshot
    """
)
SNAPSHOTS = Path("__snapshots__", "test_user")


@pytest.fixture(scope="module")
def written_snapshots() -> dict[str, str]:
    """The snapshots a ``--snapshot-update`` session of SUITE writes, by file name: filled by the
    first test (of this module, on this worker) that trains them, laid by the others as they are."""
    return {}


@pytest.fixture
def snapshotted(user_suite: pytest.Pytester, written_snapshots: dict[str, str]) -> pytest.Pytester:
    """A user's project with SUITE and the snapshots its ``--snapshot-update`` session wrote: trained
    once (the session is the review cycle's step 2), the same files for every test that starts there."""
    user_suite.makepyfile(test_user=SUITE)
    directory = user_suite.path / SNAPSHOTS
    if not written_snapshots:
        user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=2)
        written_snapshots.update({path.name: path.read_text() for path in directory.iterdir()})
    else:
        directory.mkdir(parents=True)
        for name, text in written_snapshots.items():
            (directory / name).write_text(text)
    assert sorted(written_snapshots) == [
        f"test_seed[{dtype}].convergence.txt" for dtype in ("float16", "float32")
    ]
    return user_suite


def snapshot_file(pytester: pytest.Pytester, dtype: str) -> Path:
    return pytester.path / SNAPSHOTS / f"test_seed[{dtype}].convergence.txt"


def scale_checkpoint_losses(path: Path, factor: float) -> None:
    """Edit a stored snapshot as noise would: every checkpoint loss times ``factor``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("loss at ")) + 1
    for index in range(start, len(lines) - 1):
        step, value = lines[index].split()
        lines[index] = f"{step} {float(value) * factor!r}"
    path.write_text("\n".join(lines) + "\n")


def test_the_whole_review_cycle(user_suite: pytest.Pytester, written_snapshots: dict[str, str]) -> None:
    user_suite.makepyfile(test_user=SUITE)

    # 1. no snapshot yet: fails and says how to create one
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*seed-logistic [[]float16[]]: no snapshot stored yet; "
            "create it with pytest --convergence --snapshot-update"
        ]
    )

    # 2. created with --snapshot-update
    result = user_suite.runpytest("--convergence", "--snapshot-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*2 snapshots generated*"])
    stored = snapshot_file(user_suite, "float16").read_text()
    assert stored.startswith("pytest-convergence snapshot v1\n")
    assert "dtype: float16" in stored and "outcome: " in stored and stored.endswith("end\n")
    if not written_snapshots:  # the other tests of this module start from these files
        written_snapshots.update(
            {path.name: path.read_text() for path in (user_suite.path / SNAPSHOTS).iterdir()}
        )

    # 3. passes on rerun, bit-identical: under --convergence-exact (the tolerant comparison passes a
    # rerun in step 6)
    user_suite.runpytest("--convergence", "--convergence-exact").assert_outcomes(passed=2)

    # 4. noise within the float16 tolerance (0.1% against rtol 1%) passes; exact mode rejects it
    scale_checkpoint_losses(snapshot_file(user_suite, "float16"), 1.001)
    user_suite.runpytest("--convergence").assert_outcomes(passed=2)
    exact = user_suite.runpytest("--convergence", "--convergence-exact")
    exact.assert_outcomes(passed=1, failed=1)
    exact.stdout.fnmatch_lines(["*not bit-identical: first difference in compared line*"])

    # 5. the learning rate +1% fails with a readable report
    user_suite.makepyfile(test_user=SUITE.replace("LEARNING_RATE = 2.55", "LEARNING_RATE = 2.55 * 1.01"))
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*seed-logistic [[]float32[]]: the loss history changed (rtol 0.0001 for losses and weights*",
            "*the histories part at step 2: * -> *(relative error *%)",
            "*checkpoints outside rtol 0.0001: * of * (*%; * allowed)",
            "*step*snapshot*now*rel. error",
            "*accept the new history with pytest --convergence --snapshot-update, after reviewing it",
        ]
    )
    result.stdout.fnmatch_lines(["*2 snapshots failed*"])

    # 6. accepted with --snapshot-update, then green
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=2)
    user_suite.runpytest("--convergence").assert_outcomes(passed=2)


def test_an_outcome_change_is_reported_first(snapshotted: pytest.Pytester) -> None:
    user_suite = snapshotted
    path = snapshot_file(user_suite, "float32")
    stored = path.read_text()
    outcome = re.search(r"^outcome: (\w+)$", stored, re.M).group(1)  # Keras 3 and 2 differ here
    assert outcome != "stalled"
    path.write_text(stored.replace(f"outcome: {outcome}", "outcome: stalled"))
    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    report = text[text.index("the loss history changed") :]
    assert report.splitlines()[1].strip().endswith(f"OUTCOME CHANGED: stalled -> {outcome}")


def test_a_marker_tolerance_overrides_the_dtype_default(snapshotted: pytest.Pytester) -> None:
    user_suite = snapshotted
    for dtype in ("float16", "float32"):  # every stored loss 20% off: beyond any dtype's default
        scale_checkpoint_losses(snapshot_file(user_suite, dtype), 1.2)
    user_suite.runpytest("--convergence").assert_outcomes(failed=2)
    changed = SUITE.replace(
        '@pytest.mark.convergence(dtypes=["float16", "float32"])',
        '@pytest.mark.convergence(dtypes=["float16", "float32"], tolerance={"rtol": 0.5})',
    )
    user_suite.makepyfile(test_user=changed)
    user_suite.runpytest("--convergence").assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("nonsense", "line *: cannot read 'loss went down, mostly'"),
        ("truncated", "the snapshot is truncated: its last line is not 'end'"),
        ("old-format", "snapshot format v0 is not the v1 this version of pytest-convergence reads"),
    ],
)
def test_a_damaged_snapshot_names_the_file_the_problem_and_the_fix(
    snapshotted: pytest.Pytester, damage: str, message: str
) -> None:
    user_suite = snapshotted
    path = snapshot_file(user_suite, "float16")
    text = path.read_text()
    if damage == "nonsense":
        text = text.replace("outcome: ", "loss went down, mostly\noutcome: ")
    elif damage == "truncated":
        text = text[: len(text) // 2]
    else:
        text = text.replace("pytest-convergence snapshot v1", "pytest-convergence snapshot v0")
    path.write_text(text)

    result = user_suite.runpytest("--convergence")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*{SNAPSHOTS / 'test_seed[[]float16[]].convergence.txt'}: {message}"])
    assert "During handling" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*1 snapshot failed. 1 snapshot passed.*"])
    result.stdout.fnmatch_lines(["*fix: pytest --convergence --snapshot-update rewrites it from this run*"])

    # the fix works: the damaged file is rewritten and the suite is green again
    user_suite.runpytest("--convergence", "--snapshot-update").assert_outcomes(passed=2)
    user_suite.runpytest("--convergence").assert_outcomes(passed=2)


def test_unused_snapshots_are_reported_and_removed_as_syrupy_does(snapshotted: pytest.Pytester) -> None:
    user_suite = snapshotted
    user_suite.makepyfile(test_user=SUITE.replace('dtypes=["float16", "float32"]', 'dtypes=["float32"]'))

    result = user_suite.runpytest("--convergence")
    result.stdout.fnmatch_lines(["*1 snapshot unused*"])
    assert result.ret == 1
    warned = user_suite.runpytest("--convergence", "--snapshot-warn-unused")
    warned.assert_outcomes(passed=1)
    assert warned.ret == 0
    user_suite.runpytest("--convergence", "--snapshot-update").stdout.fnmatch_lines(
        ["*1 unused snapshot deleted*"]
    )
    assert not snapshot_file(user_suite, "float16").exists()
    assert snapshot_file(user_suite, "float32").exists()


def test_skipped_and_deselected_dtypes_are_not_reported_unused(snapshotted: pytest.Pytester) -> None:
    user_suite = snapshotted

    narrowed = user_suite.runpytest("--convergence", "--convergence-dtypes=float32")
    narrowed.assert_outcomes(passed=1, deselected=1)
    assert "snapshot unused" not in narrowed.stdout.str()
    assert narrowed.ret == 0

    skipping = SUITE.replace(
        "def test_seed(convergence_train, convergence_snapshot):",
        "def test_seed(convergence_train, convergence_snapshot, convergence_dtype):\n"
        "    if convergence_dtype == 'float16':\n"
        "        pytest.skip('float16 unsupported on this machine')",
    )
    user_suite.makepyfile(test_user=skipping)
    skipped = user_suite.runpytest("--convergence")
    skipped.assert_outcomes(passed=1, skipped=1)
    assert "snapshot unused" not in skipped.stdout.str()
    assert snapshot_file(user_suite, "float16").exists()


def test_repeat_passes_on_a_deterministic_case_and_names_the_step_where_one_is_not(
    user_suite: pytest.Pytester,
) -> None:
    user_suite.makepyfile(
        test_user=SUITE.replace("convergence_snapshot):", "):").replace(
            "assert convergence_train(seed) == convergence_snapshot", "convergence_train(seed)"
        )
    )
    user_suite.runpytest("--convergence", "--convergence-repeat=2").assert_outcomes(passed=2)

    user_suite.makepyfile(
        test_flaky=textwrap.dedent(
            """
            import itertools
            import keras
            import pytest
            from pytest_convergence import Case

            builds = itertools.count()

            def drifting(dtype):
                # a model whose starting point changes with every build: not reproducible
                start = 0.1 * next(builds)
                return keras.Sequential([keras.Input((1,)), keras.layers.Dense(
                    1, kernel_initializer=keras.initializers.Constant(start))])

            flaky = Case("flaky", model=drifting, x=[[-1.0], [1.0]], y=[1.0, 0.0], loss="mse", steps=20)

            @pytest.mark.convergence(dtypes=["float32"])
            def test_flaky(convergence_train):
                convergence_train(flaky)
            """
        )
    )
    result = user_suite.runpytest("--convergence", "--convergence-repeat=2", "test_flaky.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*flaky [[]float32, loop engine[]] is not deterministic: "
            "training 2 of 2: the loss differs from step 1:*"
        ]
    )


def test_calibration_recommends_a_tolerance_from_perturbed_reruns(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(
        test_user=textwrap.dedent(
            """
            import numpy as np
            import pytest
            from pytest_convergence import Case

            rng = np.random.default_rng(0)
            x = rng.normal(size=(96, 2)).astype("float32")
            mlp = Case.sequential(
                "mlp", layers=[{"class_name": "Dense", "config": {"units": 8, "activation": "relu"}},
                               {"class_name": "Dense", "config": {"units": 1}}],
                input_shape=(2,), x=x, y=(x[:, 0] * x[:, 1] > 0).astype("float32"),
                loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
                optimizer="adam", epochs=5, batch_size=16,
            )

            @pytest.mark.convergence(dtypes=["float32"])
            def test_mlp(convergence_train):
                convergence_train(mlp)
            """
        )
    )
    result = user_suite.runpytest("--convergence", "--convergence-calibrate=3")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*= convergence calibration (tolerance from data) =*",
            "case*dtype*runs*median spread*max spread*recommended rtol*rtol now*fits*outcomes*measured*",
            "mlp*float32*3*native ulp[*]2",
        ]
    )
    row = next(line for line in result.stdout.lines if line.startswith("mlp ") and line.split()[2] == "3")
    cells = row.split()
    recommended, current = float(cells[5]), float(cells[6])
    assert current == 1e-4  # the float32 default
    assert recommended >= 0  # 0 when every rerun is bit-identical
    assert cells[7] == ("yes" if recommended <= current else "NO")


def test_the_same_snapshots_with_and_without_xdist(snapshotted: pytest.Pytester) -> None:
    """Snapshots, and the results file, from pytest-xdist workers: the same as a serial session's
    (the one that wrote this module's snapshots)."""
    pytest.importorskip("xdist")
    user_suite = snapshotted
    written = {dtype: snapshot_file(user_suite, dtype).read_text() for dtype in ("float16", "float32")}

    parallel = user_suite.runpytest_subprocess("--convergence", "-n", "2", "--convergence-results=par.json")
    parallel.assert_outcomes(passed=2)
    parallel.stdout.fnmatch_lines(["*= convergence summary =*"])
    parallel.stdout.fnmatch_lines(["*2 snapshots passed*"])
    # each worker's runs merged into one results file
    runs = json.loads((user_suite.path / "par.json").read_text())["runs"]
    assert sorted((run["case"], run["dtype"]) for run in runs) == [
        ("seed-logistic", "float16"),
        ("seed-logistic", "float32"),
    ]

    for path in (user_suite.path / SNAPSHOTS).iterdir():
        path.unlink()
    rewritten = user_suite.runpytest_subprocess("--convergence", "--snapshot-update", "-n", "2")
    rewritten.assert_outcomes(passed=2)
    for dtype, text in written.items():
        assert snapshot_file(user_suite, dtype).read_text() == text
    assert not [p for p in (user_suite.path / SNAPSHOTS).iterdir() if re.search(r"\.tmp$", p.name)]


def test_another_backends_snapshot_beside_a_spec_is_not_unused_with_a_python_test(
    snapshotted: pytest.Pytester,
) -> None:
    """A session with a Python test and a spec file, one process: the spec's JAX snapshot is not
    this TensorFlow session's to report unused (it once made the catalogue's `./dev demo` exit 1),
    while a stale snapshot of its own still is."""
    from factories import seed_spec

    snapshotted.path.joinpath("seed.convergence.toml").write_text(
        seed_spec('name = "seed"\ndtypes = ["float32"]\nsteps = 20\n')
    )
    snapshotted.runpytest("--convergence", "--snapshot-update", "seed.convergence.toml").assert_outcomes(
        passed=1
    )
    stored = snapshotted.path / "__snapshots__" / "seed.convergence"
    own = (stored / "seed[float32].convergence.txt").read_text()
    (stored / "seed[jax-float32].convergence.txt").write_text(own)
    result = snapshotted.runpytest("--convergence", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert result.ret == 0 and " unused" not in result.stdout.str().replace(str(snapshotted.path), "")

    (stored / "seed[float64].convergence.txt").write_text(own)
    result = snapshotted.runpytest("--convergence")
    result.stdout.fnmatch_lines(["*1 snapshot unused*"])
