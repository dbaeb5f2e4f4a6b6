"""``pytest-convergence gate OLD NEW``: the upgrade gate as a command of the installed package.

The plan is checked through ``--dry-run`` (nothing installed, nothing trained); one real run reuses
this environment on both sides to gate a tiny suite end to end.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest
from factories import seed_spec

import pytest_convergence
from pytest_convergence.cli import main
from pytest_convergence.gate import upgrade

CHECKOUT = Path(pytest_convergence.__file__).resolve().parents[1]
FROM_SOURCE = (CHECKOUT / "pyproject.toml").is_file()

TINY_SPEC = seed_spec('name = "tiny"\ndtypes = ["float32"]\nsteps = 20\n')


def dry_run(capsys: pytest.CaptureFixture[str], *arguments: str) -> list[str]:
    assert main(["gate", *arguments, "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


def test_dry_run_lists_the_whole_gate_from_the_projects_own_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # constraints.txt is then found in the source directory
    if not FROM_SOURCE:
        pytest.skip("pytest-convergence is not installed from a checkout with constraints.txt")
    lines = dry_run(capsys, "2.19.0", "2.21.0", "--repeat", "2", "--constraints", "constraints.txt")
    commands = [shlex.split(line) for line in lines]
    assert not list(tmp_path.iterdir()), "a dry run writes nothing"

    installs = [argv for argv in commands if argv[1:4] == ["-m", "pip", "install"]]
    assert [argv[0] for argv in installs] == [
        ".gate/venv-tensorflow-cpu-2.19.0/bin/python",
        ".gate/venv-tensorflow-cpu-2.21.0/bin/python",
    ]
    for install, version in zip(installs, ("2.19.0", "2.21.0")):
        assert f"tensorflow-cpu=={version}" in install
        # the project itself, from its source directory, with the plot extra: its dependencies
        # (pytest, numpy, syrupy, pytest-benchmark, matplotlib) come from its own pyproject
        assert install[-2:] == ["-e", f"{CHECKOUT}[plot]"]
        assert not {"pytest", "syrupy", "pytest-benchmark", "matplotlib", "numpy"} & set(install)
        # the repository's constraints, less the TensorFlow and Keras pins
        constraints = install[install.index("-c") + 1]
        assert constraints == ".gate/constraints-without-tensorflow.txt"
    written = [  # an empty file, or a heredoc of the other pins (jax, torch)
        i
        for i, line in enumerate(lines)
        if line.endswith("> .gate/constraints-without-tensorflow.txt")
        or "> .gate/constraints-without-tensorflow.txt <<" in line
    ]
    assert written and written[0] < lines.index(shlex.join(installs[0]))
    steps = upgrade.plan(upgrade.Options("2.19.0", "2.21.0", constraints=Path("constraints.txt")))
    (filtered,) = [step for step in steps if isinstance(step, upgrade.WriteFile)]
    assert str(filtered.path) == constraints
    assert "tensorflow-cpu==" in (CHECKOUT / "constraints.txt").read_text()
    pins = [line for line in filtered.text.splitlines() if not line.startswith("#")]
    assert not [
        pin for pin in pins if pin.lower().startswith(("tensorflow", "keras", "tf-keras", "tf_keras"))
    ]

    sessions = [argv for argv in commands if argv[1:3] == ["-m", "pytest"]]
    assert [argv[0].split("/")[1] for argv in sessions] == [
        "venv-tensorflow-cpu-2.19.0",
        "venv-tensorflow-cpu-2.21.0",
        "venv-tensorflow-cpu-2.19.0",
        "venv-tensorflow-cpu-2.21.0",
    ]  # alternating old and new
    assert all(argv[3:5] == ["fixtures", "--convergence"] for argv in sessions)
    assert "--convergence-results=.gate/results-2.19.0-1.json" in sessions[0]
    assert "--convergence-results=.gate/results-2.21.0-2.json" in sessions[3]
    assert all(line.endswith("|| true") for line in lines if " -m pytest " in line)  # failures go on

    merges = [argv for argv in commands if argv[1:2] == ["merge"]]
    merge_old, merge_new = merges
    compare = commands[-1]
    assert merge_old[1:4] == ["merge", "--repeats", "gate-2.19.0-to-2.21.0/results-2.19.0.json"]
    assert merge_old[4:] == [".gate/results-2.19.0-1.json", ".gate/results-2.19.0-2.json"]
    assert merge_new[0] == ".gate/venv-tensorflow-cpu-2.21.0/bin/pytest-convergence"
    assert compare[:4] == [
        ".gate/venv-tensorflow-cpu-2.21.0/bin/pytest-convergence",
        "compare",
        "gate-2.19.0-to-2.21.0/results-2.19.0.json",
        "gate-2.19.0-to-2.21.0/results-2.21.0.json",
    ]
    assert compare[-2:] == ["tee", "gate-2.19.0-to-2.21.0/verdict.txt"]
    assert "--markdown" in compare and "--html" in compare
    assert compare[compare.index("--replays") + 1] == ".gate/replay"
    # between the merges and the comparison: the two replay rounds, each side in its environment
    replays = commands[commands.index(merge_new) + 1 : -1]
    tool = ".gate/venv-tensorflow-cpu-2.21.0/bin/pytest-convergence"
    assert [argv[:2] + argv[-2:] for argv in replays if argv[0] == tool] == [
        [tool, "replay-plan", "--round", "localise"],
        [tool, "replay", "--log", ".gate/replay-2.19.0.log"],
        [tool, "replay", "--log", ".gate/replay-2.21.0.log"],
        [tool, "replay-plan", "--round", "confirm"],
        [tool, "replay", "--log", ".gate/replay-confirm-2.21.0.log"],
    ]
    python = [argv[argv.index("--python") + 1] for argv in replays if "--python" in argv]
    assert python == [
        ".gate/venv-tensorflow-cpu-2.19.0/bin/python",
        ".gate/venv-tensorflow-cpu-2.21.0/bin/python",
        ".gate/venv-tensorflow-cpu-2.21.0/bin/python",
    ]


def test_the_constraints_lose_only_their_tensorflow_and_keras_pins(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "# pins\ntensorflow-cpu==2.21.0\nKeras==3.15.1  # Keras 3\ntf_keras==2.21.0\n"
        "tensorflow==2.21.0 ; sys_platform == 'darwin'\nnumpy==2.1.3\n-c more.txt\n"
    )
    path, text = upgrade.filtered_constraints(constraints, "tensorflow-cpu", tmp_path / ".gate")
    assert path == tmp_path / ".gate" / "constraints-without-tensorflow.txt"
    assert text.splitlines()[1:] == ["numpy==2.1.3", f"-c {tmp_path / 'more.txt'}"]


def test_the_installed_package_is_pinned_when_not_run_from_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upgrade, "source_directory", lambda: None)
    monkeypatch.setattr(upgrade, "_direct_urls", lambda: [])
    version = upgrade.metadata.version("pytest-convergence")
    assert upgrade.project_requirement() == [f"pytest-convergence[plot]=={version}"]


def test_reused_environments_install_nothing_and_reused_results_train_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.json"
    old.write_text("{}")
    lines = dry_run(
        capsys, "2.19.0", "2.21.0", "--venv-new", sys.prefix, "--results-old", str(old), "--repeat", "3"
    )
    assert not [line for line in lines if " pip " in line or " venv " in line]
    sessions = [line for line in lines if " -m pytest " in line]
    assert len(sessions) == 3 and all(line.startswith(sys.prefix) for line in sessions)
    assert f"cp {old} gate-2.19.0-to-2.21.0/results-2.19.0.json" in lines


def test_the_gate_runs_end_to_end_in_this_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both sides in this environment (so the same TensorFlow: PASS), one session each, on a tiny
    suite without a stored snapshot: its test fails, which must not stop the gate."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "tiny.convergence.toml").write_text(TINY_SPEC)
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    reuse = ["--venv-old", sys.prefix, "--venv-new", sys.prefix]
    status = main(["gate", "before", "after", "--suite", "suite", "--repeat", "1", "--out", "out", *reuse])
    output = capsys.readouterr()
    elapsed = time.perf_counter() - start
    out = tmp_path / "out"
    assert status == 0, output.out + output.err
    for name in ("verdict.md", "verdict.txt", "report.html", "results-before.json", "results-after.json"):
        assert (out / name).is_file(), name
    verdict = (out / "verdict.txt").read_text()
    assert "verdict: PASS" in verdict
    assert "no snapshot stored yet" in (out / "pytest-before.log").read_text()  # its test failed
    assert f"verdict: {Path('out') / 'verdict.md'}" in output.out
    print(f"gate of a tiny suite, one session a side: {elapsed:.1f} s")


def test_a_session_without_results_stops_the_gate_naming_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test failures do not stop the gate; a session that leaves no results file does."""
    broken = tmp_path / "broken-venv"
    (broken / "bin").mkdir(parents=True)
    (broken / "bin" / "python").write_text("#!/bin/sh\necho 'Fatal Python error: Aborted'\nexit 134\n")
    (broken / "bin" / "python").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    status = main(
        ["gate", "2.19.0", "2.21.0", "--repeat", "1", "--venv-old", str(broken), "--venv-new", str(broken)]
    )
    error = capsys.readouterr().err
    assert status == 2
    assert "error: the session left no results (.gate/results-2.19.0-1.json): see " in error
    assert "gate-2.19.0-to-2.21.0/pytest-2.19.0.log" in error
    assert "Fatal Python error" in (tmp_path / "gate-2.19.0-to-2.21.0" / "pytest-2.19.0.log").read_text()


def test_a_session_that_finds_no_tests_stops_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped suite gives pytest nothing to run and an empty results file: no vacuous PASS."""
    monkeypatch.chdir(tmp_path)
    reuse = ["--venv-old", sys.prefix, "--venv-new", sys.prefix]
    status = main(["gate", "2.19.0", "2.21.0", "--suite", "no-such-suite", "--repeat", "1", *reuse])
    assert status == 2
    assert "the session ran no tests (pytest exit status 4)" in capsys.readouterr().err
