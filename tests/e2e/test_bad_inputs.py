"""Every bad input of ``bad_inputs.py``, run as a user runs it: the first line of what they are told.

Each case is a fresh project (pytester) with one mistake in it, and the command a user would type:
``pytest --convergence`` (in this process: TensorFlow is imported once, and the mistakes are found
at collection or within a 20-step training), ``python -m pytest`` where argparse names the program or
Ctrl-C is sent, and the ``pytest-convergence`` command. The test checks the message's first line, the
exit code, and that nothing the user sees is a raw Python traceback or TensorFlow's insides.
docs/bad-inputs.md is this file's data as a page (``tools/bad_inputs_page.py``).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bad_inputs import BAD_INPUTS, GROUPS, SEED_CASE, BadInput

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".+\", line \d+", re.M)
FRAMEWORK_FRAMES = re.compile(r"site-packages/(tensorflow|keras|tf_keras)/")
FRAMEWORK_ERROR = re.compile(r"\b(tensorflow|keras|tf_keras)(\.\w+)+\.\w*(Error|Exception)\b")


def keras_3() -> bool:
    import keras

    return keras.__version__.startswith("3.")


def numbered_alike(text: str) -> str:
    """Keras's words without its layer numbering ('dense_3'), which counts the layers this process built."""
    return re.sub(r"'([a-z]+)_\d+'", r"'\1'", text)


def command(bad: BadInput) -> list[str]:
    if bad.command[:3] == ("python", "-m", "pytest"):
        return [sys.executable, *bad.command[1:]]
    if bad.command[0] == "pytest-convergence":
        script = Path(sys.executable).with_name("pytest-convergence")
        found = str(script) if script.exists() else shutil.which("pytest-convergence")
        assert found, "the pytest-convergence command is not installed"
        return [found, *bad.command[1:]]
    raise AssertionError(f"{bad.name}: no way to run {bad.command}")


def interrupted(bad: BadInput, argv: list[str], cwd: Path) -> tuple[str, int]:
    """Run ``argv`` and send it SIGINT (a terminal's Ctrl-C) where ``bad.interrupt`` says."""
    assert bad.interrupt is not None
    pattern, delay = bad.interrupt
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    deadline = time.monotonic() + TIMEOUT
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
    reader.join(timeout=5)
    return "".join(chunks), process.returncode


def run(bad: BadInput, project: pytest.Pytester) -> tuple[str, int]:
    """What the user sees (stdout and stderr) and the exit code."""
    if bad.command[0] == "pytest":
        result = project.runpytest(*bad.command[1:])
        return "\n".join(result.outlines + result.errlines), int(result.ret)
    argv = command(bad)
    if bad.interrupt is not None:
        return interrupted(bad, argv, project.path)
    done = project.run(*argv, timeout=TIMEOUT)
    return "\n".join(done.outlines + done.errlines), int(done.ret)


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[bad.name for bad in BAD_INPUTS])
def test_a_bad_input_is_told_in_one_clear_line(
    bad: BadInput, user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv(
        "PYTHONUNBUFFERED", "1"
    )  # lines arrive as a terminal shows them: Ctrl-C lands where meant
    for name, content in {"cases.py": SEED_CASE, **bad.files}.items():
        path = user_suite.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    before = {name: (user_suite.path / name).read_bytes() for name in bad.kept}

    output, exit_code = run(bad, user_suite)

    output = output.replace(f"{user_suite.path}/", "")  # paths as the user typed them
    lines = [line[1:].strip() if line.startswith("E ") else line.strip() for line in output.splitlines()]
    if not bad.keras_says:
        assert bad.message in lines, output
    else:  # the product's words exactly; Keras's on the Keras 3 they were quoted from (Keras 2's differ)
        said = [line[len(bad.message) :] for line in lines if line.startswith(bad.message)]
        assert said, output
        if keras_3():
            assert numbered_alike(bad.keras_says) in map(numbered_alike, said), output
    assert exit_code == bad.exit_code, f"exit code {exit_code}\n{output}"
    assert not TRACEBACK.search(output), output
    frames = "\n".join(line for line in output.splitlines() if not line.endswith(": KeyboardInterrupt"))
    assert not FRAMEWORK_FRAMES.search(frames), output  # pytest's one line saying where Ctrl-C landed aside
    assert not FRAMEWORK_ERROR.search(bad.line)
    for name, data in before.items():
        assert (user_suite.path / name).read_bytes() == data, f"{name} changed"


def test_every_group_has_bad_inputs_and_every_name_is_one_case() -> None:
    names = [bad.name for bad in BAD_INPUTS]
    assert len(set(names)) == len(names)
    assert {bad.group for bad in BAD_INPUTS} == set(GROUPS)


def test_the_page_is_the_bad_inputs_as_they_are() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bad_inputs_page.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    page = (ROOT / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    assert done.stdout == page, (
        "docs/bad-inputs.md is stale: python tools/bad_inputs_page.py > docs/bad-inputs.md"
    )
