"""The plugin prints no TensorFlow noise of its own (issue 22): no grappler errors and no
"triggered tf.function retracing" warnings from the functions it traces for every run, beyond
what plain ``model.fit`` prints for the same model trained as often.

TensorFlow counts traces by the Python code they come from and warns (at most twice per code, per
process) from the fifth: so the suite runs in a fresh process (``runpytest_subprocess``), five
runs of the plugin beside five plain ``fit`` calls, and each test's lines are counted in its own
section of the ``-rA`` report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

RUNS = 5
NOISE = re.compile(r"triggered tf\.function retracing|empty op name|grappler", re.IGNORECASE)
SUITE = textwrap.dedent(
    f"""
    import numpy as np
    import pytest
    from pytest_convergence import Case

    X = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    Y = (X.sum(axis=1) > 0).astype("float32")
    LAYERS = [{{"class_name": "Dense", "config": {{"units": 4, "activation": "relu"}}}},
              {{"class_name": "Dense", "config": {{"units": 1, "activation": "sigmoid"}}}}]

    @pytest.mark.convergence(dtypes=["float32"])
    @pytest.mark.parametrize("seed", range({RUNS}))
    def test_plugin(convergence_train, seed):
        convergence_train(Case.sequential(
            f"mlp-{{seed}}", layers=LAYERS, input_shape=(4,), x=X, y=Y,
            loss={{"class_name": "BinaryCrossentropy", "config": {{}}}},
            optimizer={{"class_name": "Adam", "config": {{"learning_rate": 0.01}}}},
            steps=4, batch_size=8, seed=seed,
        ))

    @pytest.mark.parametrize("seed", range({RUNS}))
    def test_fit(seed):
        from pytest_convergence.backend import import_keras

        keras = import_keras()[1].keras  # Keras 3, or tf_keras for Keras 2
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.BinaryCrossentropy())
        model.fit(X, Y, batch_size=8, epochs=2, verbose=0)
    """
)


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each test's noise lines (grappler, retracing), by test name (``test_plugin``, ``test_fit``),
    from one fresh pytest process run for the module."""
    root = tmp_path_factory.mktemp("quiet")
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_user.py").write_text(SUITE)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    command = [sys.executable, "-m", "pytest", "--convergence", "-rA", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    found: dict[str, list[str]] = {"test_plugin": [], "test_fit": []}
    section = ""
    for line in output.splitlines():
        title = re.match(r"^_{3,} (test_\w+)\[.*\] _{3,}$", line)
        if title:
            section = title.group(1)
        elif line.startswith("=") or line.startswith("PASSED"):
            section = ""
        elif section and NOISE.search(line):
            found[section].append(line)
    assert f"{2 * RUNS} passed" in output
    return found


def test_the_probes_trace_without_retracing_warnings(noise: dict[str, list[str]]) -> None:
    probes = [line for line in noise["test_plugin"] if "_probe_outputs" in line or "_float64_loss" in line]
    assert probes == []


def test_the_plugin_prints_no_more_noise_than_plain_fit(noise: dict[str, list[str]]) -> None:
    assert len(noise["test_plugin"]) <= len(noise["test_fit"]), noise["test_plugin"]
