#!/usr/bin/env python3
"""Replay the bad inputs a new user tries, and print the first line of what each one is told.

Every input runs as a user would run it: a small project in its own temporary directory, and a
real ``pytest --convergence`` or ``pytest-convergence`` process. Inputs found at the same stage
share one process where that changes nothing a user sees (every bad spec file of one session is
its own collection error, every bad training its own failing test), so the whole replay takes a
few minutes. For each input it prints one line: the input's name and the first line of the message
that concerns it (the error, not pytest's chrome), flagged ``!!`` when what the user sees holds a
raw Python traceback (``Traceback``, ``File "...", line``) or frames or an exception class from
inside TensorFlow or Keras (pytest's one line saying where a Ctrl-C landed is not counted).

    python scripts/replay_bad_inputs.py                       # all of them (a few minutes)
    python scripts/replay_bad_inputs.py --only spec-dtypes-string,cli-merge-output-last
    python scripts/replay_bad_inputs.py --markdown docs/bad-inputs.md

Exit code: 0 when no line is flagged, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300

GROUPS = {
    "marker": "`@pytest.mark.convergence(...)` misspelt: found at collection, naming the test and keyword.",
    "case": "`Case(...)` declared wrongly at module level: found at collection, where the case is written.",
    "spec": "spec files (`*.convergence.toml`): found at collection, naming the file and the field path.",
    "keras": "mistakes only Keras can see: found when the run is built, naming the case, dtype and field.",
    "snapshot": "snapshot files damaged, missing or unwritable.",
    "results": "results and baseline files and their paths.",
    "option": "command-line options and ini keys: usage errors before anything is collected.",
    "cli": "the `pytest-convergence` command.",
    "interrupt": "Ctrl-C (SIGINT to pytest) with `--snapshot-update` and a results file: what survives.",
}

# ------------------------------------------------------------------------------ building blocks
INI = "[pytest]\n"
SEED_CASE = """\
from pytest_convergence import Case


def seed(**changes):
    settings = dict(
        layers=[{"class_name": "Dense", "config": {"units": 1}}],
        input_shape=(1,),
        x=[[-1.0], [1.0]],
        y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 0.1}},
        steps=20,
        seed=0,
    )
    settings.update(changes)
    return Case.sequential("seed", **settings)
"""
SPEC_MODEL = """
[model]
input_shape = [1]
layers = [{ class_name = "Dense", config = { units = 1 } }]
"""
SPEC_LOSS = """
[loss]
class_name = "BinaryCrossentropy"
config = { from_logits = true }
"""
SPEC_OPTIMIZER = """
[optimizer]
class_name = "RMSprop"
config = { learning_rate = 0.1 }
"""
SPEC_DATA = """
[data]
x = [[-1.0], [1.0]]
y = [1.0, 0.0]
"""


def spec(
    header: str = 'dtypes = ["float32"]\nsteps = 20',
    *,
    model: str = SPEC_MODEL,
    loss: str = SPEC_LOSS,
    optimizer: str = SPEC_OPTIMIZER,
    data: str = SPEC_DATA,
    footer: str = "",
) -> str:
    """A spec file of the seed model, with one part replaced."""
    return header + "\n" + model + loss + optimizer + data + footer


def marker_test(marker: str) -> str:
    return (
        f"import pytest\n\n\n@pytest.mark.convergence({marker})\n"
        "def test_it(convergence_train, convergence_dtype):\n    pass\n"
    )


def case_module(changes: str) -> str:
    return f"from cases import seed\n\ncase = seed({changes})\n\n\ndef test_it():\n    pass\n"


def training_test(body: str, dtypes: str = '["float32"]', imports: str = "", name: str = "test_it") -> str:
    body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return (
        f"import pytest\nfrom cases import seed\n{imports}\n\n"
        f"@pytest.mark.convergence(dtypes={dtypes})\n"
        f"def {name}(convergence_train, convergence_dtype):\n{body}\n"
    )


def results_document(*runs: dict[str, object], tensorflow: str = "2.21.0") -> str:
    """A results file as pytest --convergence-results writes it (schema 1), with hand-made runs."""
    versions = {"tensorflow": tensorflow, "keras": "3.15.1", "python": "3.11.7"}
    return json.dumps(
        {
            "schema": 1,
            "created": "2026-01-01T00:00:00+00:00",
            "machine": {},
            "versions": versions,
            "runs": [{**run, "versions": versions} for run in runs],
        },
        indent=1,
    )


def run_record(case: str = "seed", dtype: str = "float32") -> dict[str, object]:
    return {
        "case": case,
        "dtype": dtype,
        "engine": "loop",
        "test": f"test_it.py::test_it[{dtype}]",
        "status": "passed",
        "outcome": "descending",
        "evidence": {},
        "final_loss": 0.07,
        "steps": 20,
        "target_loss": None,
        "steps_to_target": None,
        "converged": None,
        "expectation_met": None,
        "expectation_problems": [],
        "checkpoint_steps": [10, 20],
        "checkpoint_losses": [0.2, 0.07],
        "steps_per_second": 100.0,
        "wall_times": [0.2],
        "loss_dtype": "float32",
        "variable_dtype": "float32",
    }


# ------------------------------------------------------------------------------ the inputs
@dataclass
class Input:
    name: str
    group: str
    what: str
    section: str | None = None
    """The title of the pytest report section about this input (a collection error's file, a
    failing test's id); None: the whole output of its own process."""
    pick: tuple[str, ...] = ()
    """Where several lines could be the message (a summary, a warning), patterns for the one
    that concerns this input, tried in order; the line is still printed as the user saw it."""
    files: tuple[str, ...] = ()
    """The files only this input adds to a shared session (left out when it is not replayed)."""


@dataclass
class Session:
    """One process (after optional preparation), and the inputs whose messages it shows."""

    name: str
    files: dict[str, str | bytes]
    argv: list[str]
    inputs: list[Input]
    prepare: list[list[str]] = field(default_factory=list)
    mutate: Callable[[Path], None] | None = None
    interrupt: tuple[str, float] | None = None
    """SIGINT: this many seconds after the output first matches this pattern."""
    check: Callable[[Path, dict[str, bytes]], str] | None = None
    """After the run: a note on what happened to the files (the interrupt inputs)."""


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def cli_cmd(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("pytest-convergence")
    return (
        [str(script), *args] if script.exists() else [sys.executable, "-m", "pytest_convergence.cli", *args]
    )


def sessions() -> list[Session]:
    found: list[Session] = []

    # --- found at collection: markers, cases, spec files; one session, one error per file
    collect_files: dict[str, str | bytes] = {"pytest.ini": INI, "cases.py": SEED_CASE}
    collect_inputs: list[Input] = []

    def collected(name: str, group: str, what: str, filename: str, text: str) -> None:
        collect_files[filename] = text
        collect_inputs.append(
            Input(name, group, what, section=f"ERROR collecting {filename}", files=(filename,))
        )

    for name, what, marker in [
        ("marker-dtypes-string", 'dtypes="float16" (a string, not a list)', 'dtypes="float16"'),
        ("marker-dtype-alias-fp16", 'dtypes=["fp16"]', 'dtypes=["fp16"]'),
        ("marker-dtype-alias-half", 'dtypes=["float32", "half"]', 'dtypes=["float32", "half"]'),
        ("marker-dtype-unknown", 'dtypes=["float8"]', 'dtypes=["float8"]'),
        ("marker-dtypes-empty", "dtypes=[]", "dtypes=[]"),
        ("marker-positional", '@pytest.mark.convergence("float16")', '"float16"'),
        ("marker-unknown-keyword", 'dtype=["float16"] (singular)', 'dtype=["float16"]'),
        ("marker-engine", 'engine="jit"', 'dtypes=["float32"], engine="jit"'),
        ("marker-tolerance-key", 'tolerance={"rtl": 0.1}', 'dtypes=["float32"], tolerance={"rtl": 0.1}'),
    ]:
        collected(name, "marker", what, f"test_{name.replace('-', '_')}.py", marker_test(marker))
    for name, what, changes in [
        ("case-steps-zero", "steps=0", "steps=0"),
        ("case-steps-and-epochs", "steps and epochs both", "epochs=3"),
        ("case-xy-lengths", "y longer than x", "y=[1.0, 0.0, 1.0]"),
        ("case-x-nan", "x holding NaN", 'x=[[float("nan")], [1.0]]'),
        ("case-loss-dict", "a loss dict without class_name", 'loss={"from_logits": True}'),
        (
            "case-expect-dtype-alias",
            'expectations={"half": ...}',
            'expectations={"half": {"converged": True}}',
        ),
        (
            "case-expect-outcome-converged",
            'outcome="converged"',
            'expectations={"float32": {"outcome": "converged"}}',
        ),
        ("case-engine", 'engine="jit"', 'engine="jit"'),
        ("case-validation-split", "validation_split=1.5", "validation_split=1.5"),
        ("case-unknown-field", 'dtypes=["float16"] given to the case', 'dtypes=["float16"]'),
        ("case-layers-strings", 'layers=["Dense"]', 'layers=["Dense"]'),
        ("case-loss-dtype-alias", 'loss_dtype="fp32"', 'loss_dtype="fp32"'),
        ("case-seed-float", "seed=0.5", "seed=0.5"),
    ]:
        collected(name, "case", what, f"test_{name.replace('-', '_')}.py", case_module(changes))
    for name, what, text in [
        ("spec-toml-syntax", "a TOML syntax error", "steps = 20\n[model\ninput_shape = [1]\n"),
        ("spec-unknown-key", "stesp = 20 (misspelt)", spec('dtypes = ["float32"]\nstesp = 20')),
        ("spec-dtypes-string", 'dtypes = "float16"', spec('dtypes = "float16"\nsteps = 20')),
        ("spec-dtype-alias", 'dtypes = ["bf16"]', spec('dtypes = ["bf16"]\nsteps = 20')),
        ("spec-no-loss", "no [loss]", spec(loss="")),
        ("spec-no-budget", "neither steps nor epochs", spec('dtypes = ["float32"]')),
        ("spec-steps-negative", "steps = -5", spec('dtypes = ["float32"]\nsteps = -5')),
        ("spec-layer-class", 'class_name = "Dens"', spec(model=SPEC_MODEL.replace('"Dense"', '"Dens"'))),
        ("spec-layer-config", "units = 0", spec(model=SPEC_MODEL.replace("units = 1", "units = 0"))),
        (
            "spec-optimizer-name",
            'optimizer = "adamm"',
            spec('dtypes = ["float32"]\nsteps = 20\noptimizer = "adamm"', optimizer=""),
        ),
        (
            "spec-learning-rate-text",
            'learning_rate = "fast"',
            spec(optimizer=SPEC_OPTIMIZER.replace("0.1", '"fast"')),
        ),
        (
            "spec-generator",
            'generator = "two_moon"',
            spec(data='\n[data]\ngenerator = "two_moon"\nsamples = 64\n'),
        ),
        ("spec-npz-missing", 'npz = "data.npz" not there', spec(data='\n[data]\nnpz = "data.npz"\n')),
        (
            "spec-expect-not-in-dtypes",
            '[expect.float16] with dtypes = ["float32"]',
            spec(footer="\n[expect.float16]\nconverged = true\n"),
        ),
        (
            "spec-expect-alias",
            "[expect.half]",
            spec('dtypes = ["float16"]\nsteps = 20', footer="\n[expect.half]\nconverged = true\n"),
        ),
        (
            "spec-builder-import",
            'builder = "nomodule:build"',
            spec(model='\n[model]\nbuilder = "nomodule:build"\n'),
        ),
        (
            "spec-metrics-string",
            'metrics = "accuracy"',
            spec('dtypes = ["float32"]\nsteps = 20\nmetrics = "accuracy"'),
        ),
        (
            "spec-data-misfit",
            "samples of 3 values for input_shape [1]",
            spec(data="\n[data]\nx = [[-1.0, 0.0, 2.0], [1.0, 0.0, 2.0]]\ny = [1.0, 0.0]\n"),
        ),
        (
            "spec-y-misfit",
            "y of 2 values per sample for 1 output",
            spec(data="\n[data]\nx = [[-1.0], [1.0]]\ny = [[1.0, 0.0], [0.0, 1.0]]\n"),
        ),
    ]:
        collected(name, "spec", what, f"{name}.convergence.toml", text)
    found.append(Session("collect", collect_files, pytest_cmd("--convergence"), collect_inputs))

    # --- found when a run is built or trained: one session, one failing test per file
    train_files: dict[str, str | bytes] = {
        "pytest.ini": INI,
        "cases.py": SEED_CASE,
        "builders.py": textwrap.dedent(
            """\
            import keras


            def float32_always(dtype):
                # ignores the dtype it is asked for: a float32 model whatever the policy
                return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, dtype="float32")])
            """
        ),
        "builder-ignores-dtype.convergence.toml": 'dtypes = ["float16"]\nsteps = 20\n\n[model]\n'
        'builder = "builders:float32_always"\n' + SPEC_LOSS + SPEC_OPTIMIZER + SPEC_DATA,
    }
    train_inputs = [
        Input(
            "spec-builder-ignores-dtype",
            "keras",
            "a spec's builder returning a float32 model for float16",
            section="builder-ignores-dtype[float16]",
            files=("builder-ignores-dtype.convergence.toml",),
        ),
    ]
    for name, what, source in [
        (
            "keras-optimizer-is-loss",
            "optimizer=keras.losses.MeanSquaredError()",
            training_test(
                "convergence_train(seed(optimizer=keras.losses.MeanSquaredError()))", imports="import keras"
            ),
        ),
        (
            "keras-loss-is-optimizer",
            "loss=keras.optimizers.SGD()",
            training_test("convergence_train(seed(loss=keras.optimizers.SGD()))", imports="import keras"),
        ),
        (
            "keras-x-misfit",
            "x with 3 values per sample, input_shape=(1,)",
            training_test("convergence_train(seed(x=[[-1.0, 0.0, 2.0], [1.0, 0.0, 2.0]]))"),
        ),
        (
            "keras-builder-ignores-dtype",
            "a builder returning a float32 model for float16",
            training_test(
                """
             def build(dtype):
                 return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, dtype="float32")])

             convergence_train(seed(layers=[{"class_name": "Dense"}], input_shape=(1,)).with_(model=build))
             """,
                dtypes='["float16"]',
                imports="import keras",
            ),
        ),
        (
            "keras-builder-returns-none",
            "a builder returning None",
            training_test("convergence_train(seed().with_(model=lambda dtype: None))"),
        ),
        (
            "keras-initial-weights",
            "initial_weights of the wrong shape",
            training_test("convergence_train(seed(initial_weights=[[[0.0], [0.0]], [0.0]]))"),
        ),
        (
            "keras-metric-unknown",
            'metrics=["acuracy"]',
            training_test('convergence_train(seed(metrics=["acuracy"]))'),
        ),
        (
            "keras-loss-unknown",
            'loss="mean_squared_eror"',
            training_test('convergence_train(seed(loss="mean_squared_eror"))'),
        ),
        (
            "keras-layer-config",
            '{"class_name": "Dense", "config": {"unit": 1}}',
            training_test('convergence_train(seed(layers=[{"class_name": "Dense", "config": {"unit": 1}}]))'),
        ),
        (
            "keras-loss-inf",
            "x so large the first loss is inf",
            training_test('convergence_train(seed(x=[[1e30], [-1e30]], loss="mse"))'),
        ),
        (
            "keras-dtype-without-marker",
            "convergence_dtype without a marker",
            "def test_keras_dtype_without_marker(convergence_dtype):\n    pass\n",
        ),
        (
            "keras-expect-keyword",
            "run.expect(final_loss=1e-3)",
            training_test("convergence_train(seed()).expect(final_loss=1e-3)"),
        ),
        (
            "keras-expect-outcome",
            'run.expect(outcome="stalling")',
            training_test('convergence_train(seed()).expect(outcome="stalling")'),
        ),
        (
            "keras-train-dtype-alias",
            'convergence_train(case, dtype="fp16")',
            training_test('convergence_train(seed(), dtype="fp16")'),
        ),
    ]:
        function = f"test_{name.replace('-', '_')}"
        train_files[f"{function}.py"] = source.replace("def test_it(", f"def {function}(")
        train_inputs.append(Input(name, "keras", what, section=function, files=(f"{function}.py",)))
    found.append(Session("train", train_files, pytest_cmd("--convergence", "-rN"), train_inputs))

    # --- snapshots: made by --snapshot-update, then damaged, then compared
    snapshot_tests = ["garbage", "truncated", "other_format", "empty", "binary", "missing"]
    snap_source = "import pytest\nfrom cases import seed\n" + "".join(
        f'\n\n@pytest.mark.convergence(dtypes=["float32"])\n'
        f"def test_{name}(convergence_train, convergence_snapshot):\n"
        f"    assert convergence_train(seed()) == convergence_snapshot\n"
        for name in snapshot_tests
    )

    def damage(root: Path) -> None:
        folder = root / "__snapshots__" / "test_snap"
        for path in folder.iterdir():
            text = path.read_bytes()
            if "[" not in path.name:
                continue
            test = path.name.split("[")[0].removeprefix("test_")
            if test == "garbage":
                path.write_text("hello, I am not a snapshot\n")
            elif test == "truncated":
                path.write_bytes(text[: len(text) // 2])
            elif test == "other_format":
                path.write_text(
                    "# serializer version: 1\n# name: test_other_format\n  list([\n    0.5,\n  ])\n# ---\n"
                )
            elif test == "empty":
                path.write_text("")
            elif test == "binary":
                path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
            elif test == "missing":
                path.unlink()

    what = {
        "garbage": "a snapshot file holding other text",
        "truncated": "a snapshot file cut in half",
        "other_format": "a snapshot in syrupy's amber format",
        "empty": "an empty snapshot file",
        "binary": "a binary file as the snapshot",
        "missing": "no snapshot yet (the first run)",
    }
    found.append(
        Session(
            "snapshots",
            {"pytest.ini": INI, "cases.py": SEED_CASE, "test_snap.py": snap_source},
            pytest_cmd("--convergence"),
            [
                Input(
                    f"snapshot-{name.replace('_', '-')}",
                    "snapshot",
                    what[name],
                    section=f"test_{name}[float32]",
                )
                for name in snapshot_tests
            ],
            prepare=[pytest_cmd("--convergence", "--snapshot-update")],
            mutate=damage,
        )
    )
    one_test = {
        "pytest.ini": INI,
        "cases.py": SEED_CASE,
        "test_one.py": training_test("convergence_train(seed())"),
    }
    found.append(
        Session(
            "snapshot-dir",
            {
                **one_test,
                "test_one.py": training_test(
                    "assert convergence_train(seed()) == convergence_snapshot"
                ).replace("convergence_dtype)", "convergence_snapshot)"),
                "__snapshots__": "a file where the snapshot directory belongs\n",
            },
            pytest_cmd("--convergence", "--snapshot-update"),
            [
                Input(
                    "snapshot-dir-unwritable",
                    "snapshot",
                    "__snapshots__ is a file: no directory can be made there",
                )
            ],
        )
    )

    # --- results and baseline files
    valid = results_document(run_record())
    for name, what, files, args in [
        (
            "baseline-missing",
            "--convergence-baseline=old.json, no such file",
            {},
            ["--convergence-baseline=old.json"],
        ),
        ("baseline-empty", "an empty baseline file", {"old.json": ""}, ["--convergence-baseline=old.json"]),
        (
            "baseline-truncated",
            "a baseline cut short",
            {"old.json": valid[: len(valid) // 2]},
            ["--convergence-baseline=old.json"],
        ),
        (
            "baseline-other-schema",
            "a baseline of results schema 99",
            {"old.json": '{"schema": 99, "runs": []}'},
            ["--convergence-baseline=old.json"],
        ),
        (
            "baseline-not-results",
            "a snapshot given as the baseline",
            {"old.json": "pytest-convergence snapshot v1\ncase: seed\n"},
            ["--convergence-baseline=old.json"],
        ),
        (
            "baseline-is-a-directory",
            "a directory given as the baseline",
            {"old.json/keep": ""},
            ["--convergence-baseline=old.json"],
        ),
        (
            "results-is-baseline",
            "--convergence-results and --convergence-baseline the same file",
            {"results.json": valid},
            ["--convergence-results=results.json", "--convergence-baseline=results.json"],
        ),
        (
            "results-unwritable",
            "--convergence-results under a path that is a file",
            {"out": "a file\n"},
            ["--convergence-results=out/results.json"],
        ),
    ]:
        found.append(
            Session(
                name,
                {**one_test, **files},
                pytest_cmd("--convergence", *args),
                [Input(name, "results", what)],
            )
        )

    # --- options and ini keys
    for name, what, ini, args in [
        ("option-dtypes-alias", "--convergence-dtypes=fp16", "", ["--convergence-dtypes=fp16"]),
        (
            "option-dtypes-unknown",
            "--convergence-dtypes=float16,int8",
            "",
            ["--convergence-dtypes=float16,int8"],
        ),
        ("option-repeat-zero", "--convergence-repeat=0", "", ["--convergence-repeat=0"]),
        ("option-calibrate-one", "--convergence-calibrate=1", "", ["--convergence-calibrate=1"]),
        ("option-engine", "--convergence-engine=jit", "", ["--convergence-engine=jit"]),
        ("option-repeat-text", "--convergence-repeat=twice", "", ["--convergence-repeat=twice"]),
        (
            "option-simulate-update",
            "--convergence-simulate-machine=1 with --snapshot-update",
            "",
            ["--convergence-simulate-machine=1", "--snapshot-update"],
        ),
        ("ini-speed", "convergence_speed = slow", "convergence_speed = slow\n", []),
        ("ini-engine", "convergence_engine = jit", "convergence_engine = jit\n", []),
        ("ini-rtol", "convergence_rtol = float16=abc", "convergence_rtol = float16=abc\n", []),
        ("ini-dtypes-alias", "convergence_dtypes = half,float32", "convergence_dtypes = half,float32\n", []),
        ("ini-min-time", "convergence_speed_min_time = fast", "convergence_speed_min_time = fast\n", []),
    ]:
        found.append(
            Session(
                name,
                {**one_test, "pytest.ini": INI + ini},
                pytest_cmd("--convergence", *args),
                [Input(name, "option", what)],
            )
        )

    # --- the pytest-convergence command
    float32_spec = {"seed.convergence.toml": spec()}
    old_file = results_document(run_record())
    other_tf = results_document(run_record("other"), tensorflow="2.19.0")
    for name, what, files, args, pick in [
        ("cli-no-command", "pytest-convergence", {}, [], None),
        (
            "cli-unknown-command",
            "pytest-convergence explian seed.convergence.toml",
            float32_spec,
            ["explian", "seed.convergence.toml"],
            None,
        ),
        (
            "cli-explain-missing",
            "explain missing.convergence.toml",
            {},
            ["explain", "missing.convergence.toml"],
            None,
        ),
        (
            "cli-explain-not-toml",
            "explain notes.txt (not TOML)",
            {"notes.txt": "just some notes\n"},
            ["explain", "notes.txt"],
            None,
        ),
        (
            "cli-explain-dtype-alias",
            "explain SPEC --dtype fp16",
            float32_spec,
            ["explain", "seed.convergence.toml", "--dtype", "fp16"],
            None,
        ),
        (
            "cli-explain-dtype-not-in-spec",
            "explain SPEC --dtype bfloat16, the spec lists float32",
            float32_spec,
            ["explain", "seed.convergence.toml", "--dtype", "bfloat16", "--steps", "5"],
            None,
        ),
        (
            "cli-explain-plot-unwritable",
            "explain SPEC --plot out/loss.png where out is a file",
            {**float32_spec, "out": "a file\n"},
            ["explain", "seed.convergence.toml", "--plot", "out/loss.png"],
            None,
        ),
        (
            "cli-explain-steps-zero",
            "explain SPEC --steps 0",
            float32_spec,
            ["explain", "seed.convergence.toml", "--steps", "0"],
            None,
        ),
        (
            "cli-explain-engine",
            "explain SPEC --engine jit",
            float32_spec,
            ["explain", "seed.convergence.toml", "--engine", "jit"],
            None,
        ),
        (
            "cli-compare-same-file",
            "compare a.json a.json",
            {"a.json": old_file},
            ["compare", "a.json", "a.json"],
            None,
        ),
        (
            "cli-compare-copies",
            "compare a.json b.json, b a copy of a",
            {"a.json": old_file, "b.json": old_file},
            ["compare", "a.json", "b.json"],
            r"^warning:",
        ),
        (
            "cli-compare-missing",
            "compare old.json new.json, no old.json",
            {"new.json": old_file},
            ["compare", "old.json", "new.json"],
            None,
        ),
        (
            "cli-compare-truncated",
            "compare with a truncated file",
            {"old.json": old_file, "new.json": old_file[:200]},
            ["compare", "old.json", "new.json"],
            None,
        ),
        (
            "cli-compare-plot-unknown",
            "compare --plot 'seeed[float32]' x.png",
            {"a.json": old_file, "b.json": old_file + "\n"},
            ["compare", "a.json", "b.json", "--plot", "seeed[float32]", "x.png"],
            r"^error:",
        ),
        (
            "cli-compare-threshold-text",
            "compare --final-loss-threshold ten",
            {"a.json": old_file, "b.json": old_file},
            ["compare", "a.json", "b.json", "--final-loss-threshold", "ten"],
            None,
        ),
        (
            "cli-compare-threshold-negative",
            "compare --final-loss-threshold -0.1",
            {"a.json": old_file, "b.json": old_file + "\n"},
            ["compare", "a.json", "b.json", "--final-loss-threshold", "-0.1"],
            r"^(error|warning):",
        ),
        (
            "cli-merge-output-last",
            "merge job1.json job2.json all.json (output last)",
            {"job1.json": old_file, "job2.json": results_document(run_record("other"))},
            ["merge", "job1.json", "job2.json", "all.json"],
            None,
        ),
        (
            "cli-merge-into-input",
            "merge job1.json job1.json job2.json",
            {"job1.json": old_file, "job2.json": results_document(run_record("other"))},
            ["merge", "job1.json", "job1.json", "job2.json"],
            None,
        ),
        (
            "cli-merge-versions",
            "merge of TensorFlow 2.21.0 and 2.19.0 results",
            {"job1.json": old_file, "job2.json": other_tf},
            ["merge", "all.json", "job1.json", "job2.json"],
            None,
        ),
        ("cli-gate-one-version", "gate 2.19.0 (NEW missing)", {}, ["gate", "2.19.0"], None),
    ]:
        found.append(
            Session(name, files, cli_cmd(*args), [Input(name, "cli", what, pick=(pick,) if pick else ())])
        )

    # --- Ctrl-C: pre-existing snapshots and results file must survive an interrupted update
    long_test = textwrap.dedent(
        """\
        import pytest
        from cases import seed


        @pytest.mark.convergence(dtypes=["float16", "float32", "float64"])
        def test_long(convergence_train, convergence_snapshot):
            assert convergence_train(seed(steps=40000)) == convergence_snapshot
        """
    )
    kept_files = {
        **{
            f"__snapshots__/test_long/test_long[{d}].convergence.txt": (
                f"pytest-convergence snapshot v1\n# {d}: reviewed, committed\n"
            )
            for d in ("float16", "float32", "float64")
        },
        "results.json": old_file,
    }
    for name, what, when in [
        ("interrupt-startup", "Ctrl-C while collecting (TensorFlow importing)", ("^collecting", 0.2)),
        (
            "interrupt-training",
            "Ctrl-C while the second dtype trains",
            (r"test_long\[float16\] (PASSED|FAILED)", 1.0),
        ),
    ]:
        found.append(
            Session(
                name,
                {"pytest.ini": INI, "cases.py": SEED_CASE, "test_long.py": long_test, **kept_files},
                pytest_cmd("--convergence", "--snapshot-update", "--convergence-results=results.json", "-v"),
                [Input(name, "interrupt", what, pick=(r"^convergence: .*interrupted", r"KeyboardInterrupt"))],
                interrupt=when,
                check=files_kept,
            )
        )
    return found


def files_kept(root: Path, before: dict[str, bytes]) -> str:
    """Which of the files that existed before the run are still there, unchanged. A snapshot of a
    test that ran to its end may be rewritten by --snapshot-update; the others must not change."""
    unchanged = [
        name
        for name, data in before.items()
        if (root / name).is_file() and (root / name).read_bytes() == data
    ]
    gone = [name for name in before if not (root / name).exists()]
    snapshots = [name for name in before if name.endswith(".convergence.txt")]
    kept = [name for name in snapshots if name in unchanged]
    results = (
        "results.json kept"
        if "results.json" in unchanged
        else ("results.json DELETED" if "results.json" in gone else "results.json REPLACED")
    )
    deleted = [name for name in snapshots if name in gone]
    return f"[files: {len(kept)} of {len(snapshots)} snapshots unchanged, {len(deleted)} deleted; {results}]"


# ------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    session: Session
    output: str
    returncode: int | None
    seconds: float
    note: str = ""


def run_session(session: Session, keep: Path | None) -> Outcome:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bad-{session.name}-") as tmp:
        root = Path(tmp)
        for relative, content in session.files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}
        env["TF_CPP_MIN_LOG_LEVEL"] = env.get("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONUNBUFFERED"] = "1"  # lines arrive as a terminal shows them: Ctrl-C lands where meant
        for command in session.prepare:
            subprocess.run(command, cwd=root, env=env, capture_output=True, timeout=TIMEOUT, check=False)
        if session.mutate is not None:
            session.mutate(root)
        before = {name: (root / name).read_bytes() for name in session.files if (root / name).is_file()}
        output, code = _run(session, root, env)
        output = output.replace(f"{root}/", "").replace(str(root), ".")  # paths as the user typed them
        note = session.check(root, before) if session.check is not None else ""
        if keep is not None:
            shutil.copytree(root, keep / session.name, dirs_exist_ok=True)
    return Outcome(session, output, code, time.monotonic() - start, note)


def _run(session: Session, root: Path, env: dict[str, str]) -> tuple[str, int | None]:
    if session.interrupt is None:
        try:
            done = subprocess.run(
                session.argv, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as error:
            return f"(timed out after {TIMEOUT} s)\n{error.stdout or ''}", None
        return done.stdout + done.stderr, done.returncode
    process = subprocess.Popen(
        session.argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + TIMEOUT
    pattern, delay = session.interrupt
    while (
        time.monotonic() < deadline
        and process.poll() is None
        and not re.search(pattern, "".join(chunks), re.M)
    ):
        time.sleep(0.02)
    time.sleep(delay)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        chunks.append("(still running 120 s after Ctrl-C: killed)\n")
    reader.join(timeout=5)
    return "".join(chunks), process.returncode


# ------------------------------------------------------------------------------ reading what the user saw
HEADER = re.compile(r"^_{2,} (.+?) _{2,}$")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".+\", line \d+")
FRAMEWORK_FRAMES = re.compile(r"site-packages/(tensorflow|keras|tf_keras)/")
FRAMEWORK_ERROR = re.compile(r"\b(tensorflow|keras|tf_keras)(\.\w+)+\.\w*(Error|Exception)\b")
CHROME = re.compile(
    r"^(={3,}|-{3,}|_{3,}|platform |rootdir|configfile|plugins|collected|collecting|cachedir|benchmark:|"
    r"\s*$|\S+\.py:\d+: \w+$|[\w.]+ = <|WARNING: All log messages|I0000|W0000|E0000|To enable the following)"
)


def sections(output: str) -> dict[str, list[str]]:
    """pytest's report sections (a collection error, a failing test) by title."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        match = HEADER.match(line)
        if match:
            current = found.setdefault(match.group(1), [])
            continue
        if line.startswith(("=====", "-----")) or line.startswith("- Captured") or " Captured " in line:
            current = None if line.startswith("=====") or "Captured" in line else current
            continue
        if current is not None:
            current.append(line)
    return found


def first_message(lines: list[str], pick: tuple[str, ...] = ()) -> str:
    """The first line of the message: the one ``pick`` names, an error pytest marks with ``E``,
    an ``ERROR:``/``error:``/``warning:``/``note:`` line, or the first line that is not pytest's chrome."""
    for pattern in pick:
        for line in lines:
            if re.search(pattern, line) and not line.startswith(("!!!!", "====")):
                return line.strip()
    marked = [line[1:].strip() for line in lines if line.startswith("E ")]
    if marked:
        return marked[0]
    for line in lines:
        if line.strip().startswith(("ERROR: usage:", "usage:")):
            continue  # argparse's usage line: the error is on a line of its own
        if re.match(r"^(ERROR|error|warning|note)\b.*:", line.strip()) or "error:" in line:
            return line.strip()
    for line in lines:  # pytest's last line, when nothing failed: the input was accepted without a word
        finished = re.match(r"^=+ (.*\b(passed|skipped|deselected|no tests ran)\b.*) =+$", line)
        if finished and not re.search(r"\b(failed|errors?)\b", finished.group(1)):
            return f"(no message; pytest: {finished.group(1)})"
    for line in lines:
        progress = re.match(r"^\S+\.(py|toml)(::\S+)? ?[.FEsxX]*( +\[ *\d+%\])?$", line)
        if not CHROME.match(line) and not progress and not line.startswith(("    ", ">", "!!!!", "[gw")):
            return line.strip()
    return "(no message)"


def flags(lines: list[str], message: str) -> list[str]:
    text = "\n".join(lines)
    found = []
    if TRACEBACK.search(text):
        found.append("Python traceback")
    # pytest's one line saying where Ctrl-C landed ("...: KeyboardInterrupt") is not a traceback
    if FRAMEWORK_FRAMES.search("\n".join(line for line in lines if not line.endswith(": KeyboardInterrupt"))):
        found.append("TensorFlow/Keras frames")
    if FRAMEWORK_ERROR.search(message):
        found.append("TensorFlow/Keras exception class")
    if message.startswith("(no "):
        found.append("no message")
    return found


@dataclass
class Line:
    input: Input
    message: str
    flags: list[str]
    note: str = ""


def read(outcome: Outcome) -> list[Line]:
    lines_of = sections(outcome.output)
    result = []
    for item in outcome.session.inputs:
        if item.section is None:
            lines = outcome.output.splitlines()
        else:
            named = re.compile(r"(^|\s)" + re.escape(item.section) + r"(\[|$)")
            titles = [title for title in lines_of if named.search(title)]
            lines = lines_of[titles[0]] if titles else []
            if not titles:  # no section: the input passed, or the session stopped before it
                summary = [line for line in outcome.output.splitlines() if item.section in line]
                lines = summary or [f"(no report section; exit code {outcome.returncode})"]
        message = first_message(lines, item.pick)
        result.append(Line(item, message, flags(lines, message), outcome.note))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated input names or groups (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (default: %(default)s)")
    parser.add_argument(
        "--markdown", type=Path, help="also write the lines as a markdown page (default: none)"
    )
    parser.add_argument(
        "--keep", type=Path, help="copy each project here after its run, to look at (default: none)"
    )
    parser.add_argument("--list", action="store_true", help="list the inputs and run none")
    arguments = parser.parse_args(argv)
    chosen = sessions()
    if arguments.only:
        wanted = {name.strip() for name in arguments.only.split(",") if name.strip()}
        for session in chosen:
            left_out = [i for i in session.inputs if not (i.name in wanted or i.group in wanted)]
            session.inputs = [i for i in session.inputs if i not in left_out]
            for name in (name for item in left_out for name in item.files):
                session.files.pop(name, None)
        chosen = [s for s in chosen if s.inputs]
    if arguments.list:
        for session in chosen:
            for item in session.inputs:
                print(f"{item.group:10} {item.name:32} {item.what}")
        return 0
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, arguments.jobs)) as pool:
        # the longest sessions first, so two workers finish together
        order = sorted(chosen, key=lambda s: -len(s.inputs) - (20 if s.prepare else 0))
        outcomes = list(pool.map(lambda s: run_session(s, arguments.keep), order))
    elapsed = time.monotonic() - start
    by_name = {line.input.name: line for outcome in outcomes for line in read(outcome)}
    ordered = [by_name[item.name] for session in chosen for item in session.inputs]
    flagged = [line for line in ordered if line.flags]
    width = max(len(line.input.name) for line in ordered)
    text = []
    for group, explanation in GROUPS.items():
        lines = [line for line in ordered if line.input.group == group]
        if not lines:
            continue
        text.append(f"{group}: {explanation}")
        for line in lines:
            mark = "!! " if line.flags else "   "
            extra = f"  [{'; '.join(line.flags)}]" if line.flags else ""
            note = f"  {line.note}" if line.note else ""
            text.append(f"{mark}{line.input.name:{width}}  {line.message}{note}{extra}")
        text.append("")
    summary = (
        f"{len(ordered)} bad inputs replayed in {elapsed:.0f} s ({arguments.jobs} processes at a time); "
        f"{len(flagged)} flagged (a raw traceback or TensorFlow internals in what the user saw)"
    )
    text.append(summary)
    print("\n".join(text))
    if arguments.markdown is not None:
        arguments.markdown.write_text(markdown(ordered, summary, argv), encoding="utf-8")
    return 1 if flagged else 0


def markdown(lines: list[Line], summary: str, argv: list[str] | None) -> str:
    command = "python scripts/replay_bad_inputs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = [
        "# What a user is told: bad inputs replayed",
        "",
        "[← back to the README](../README.md)",
        "",
        "Each line is one mistake a new user makes, replayed in a fresh project by a real `pytest` or",
        "`pytest-convergence` process, and the first line of the message it got (the error, not",
        "pytest's chrome). `!!` marks a line whose output held a raw Python traceback, frames from",
        "inside TensorFlow or Keras, or one of their exception classes. Produced by:",
        "",
        "```",
        command.strip(),
        "```",
        "",
        summary + ".",
        "",
    ]
    for group, explanation in GROUPS.items():
        chosen = [line for line in lines if line.input.group == group]
        if not chosen:
            continue
        out += [
            f"## {group}",
            "",
            explanation,
            "",
            "| input | mistake | first line of the message |",
            "| --- | --- | --- |",
        ]
        for line in chosen:
            mark = "!! " if line.flags else ""
            message = line.message + (f" {line.note}" if line.note else "")
            message += f" **[{'; '.join(line.flags)}]**" if line.flags else ""
            cell = message.replace("|", "\\|")
            out.append(
                f"| {mark}`{line.input.name}` | {line.input.what.replace('|', '/')} | `{cell}` |"
                if "`" not in cell
                else f"| {mark}`{line.input.name}` | {line.input.what} | {cell} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())
