"""The bad-input replay (scripts/replay_bad_inputs.py) on a fast subset, so the script cannot rot:
every line it prints is a message a user can act on, never a raw traceback. And its flags are
checked to fire on what they exist to catch.

The subset runs real processes: one pytest session (a marker, a Case, a spec file, collected
with TensorFlow as --convergence collects them), a usage error and two ``pytest-convergence``
commands.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "replay_bad_inputs.py"

SUBSET = {
    "marker-dtypes-string": "field 'test_it dtypes': dtypes takes a list of dtype names, got the string",
    "case-unknown-field": "field 'dtypes': a case has no dtype",
    "spec-dtype-alias": "spec-dtype-alias.convergence.toml: dtypes[0]: 'bf16' is not one of:",
    "option-dtypes-alias": "mixed_bfloat16; did you mean 'float16'?",
    "cli-compare-same-file": "error: compare a.json a.json: OLD and NEW are the same file",
    "cli-merge-output-last": "error: merge: all.json does not exist, and job1.json, the first argument",
}


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replay_bad_inputs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_replay_of_a_subset_prints_one_clear_line_per_input(tmp_path: Path) -> None:
    markdown = tmp_path / "bad-inputs.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", ",".join(SUBSET), "--markdown", str(markdown)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name, message in SUBSET.items():
        line = next(line for line in lines if line.split()[:1] == [name])
        assert message in line, line
    assert not [line for line in lines if line.startswith("!!")]
    assert f"{len(SUBSET)} bad inputs replayed" in lines[-1] and "0 flagged" in lines[-1]
    page = markdown.read_text()
    assert "python scripts/replay_bad_inputs.py --only" in page
    assert len([row for row in page.splitlines() if row.startswith("| `")]) == len(SUBSET)


def test_the_replay_has_enough_inputs_in_every_group() -> None:
    replay = load_script()
    inputs = [item for session in replay.sessions() for item in session.inputs]
    assert len(inputs) >= 45
    assert len({item.name for item in inputs}) == len(inputs)
    assert {item.group for item in inputs} == set(replay.GROUPS)


@pytest.mark.parametrize(
    ("output", "flag"),
    [
        (
            'Traceback (most recent call last):\n  File "x.py", line 3, in <module>\nValueError: bad',
            "Python traceback",
        ),
        (
            "E   tensorflow.python.framework.errors_impl.InvalidArgumentError: cannot compute",
            "TensorFlow/Keras exception class",
        ),
        (
            ".venv/lib/python3.11/site-packages/keras/src/layers/core/dense.py:144: in call\n"
            "E   ValueError: incompatible",
            "TensorFlow/Keras frames",
        ),
        ("============================== 1 passed in 0.12s ===============================", "no message"),
    ],
)
def test_the_replay_flags_what_a_user_should_never_read(output: str, flag: str) -> None:
    replay = load_script()
    lines = output.splitlines()
    assert flag in replay.flags(lines, replay.first_message(lines))


def test_the_replay_reads_the_message_not_pytest_chrome() -> None:
    replay = load_script()
    output = "\n".join(
        [
            "==================================== ERRORS ====================================",
            "_________________________ ERROR collecting test_x.py __________________________",
            "field 'test_x dtypes': unknown dtype 'fp16' (did you mean 'float16'?)",
            "  fix: write 'float16' instead of 'fp16'",
            "=========================== short test summary info ============================",
        ]
    )
    sections = replay.sections(output)
    assert list(sections) == ["ERROR collecting test_x.py"]
    message = replay.first_message(sections["ERROR collecting test_x.py"])
    assert message == "field 'test_x dtypes': unknown dtype 'fp16' (did you mean 'float16'?)"
    assert replay.flags(sections["ERROR collecting test_x.py"], message) == []
