"""Other CPUs' real kernels, end to end: a session under a variant, and calibration across variants."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from factories import hidden_suite

from pytest_convergence import kernels
from pytest_convergence.fingerprint import cpu_description

SUITE = hidden_suite(steps=100, dtypes=["float32", "float16"])


def test_a_session_under_another_cpus_kernels_records_them_and_skips_what_they_cannot_run(
    user_suite: pytest.Pytester,
) -> None:
    levels = kernels.allowed(set(cpu_description()["isa"]))
    if not levels:
        pytest.skip("not an x86 CPU: oneDNN's instruction-set cap does not apply")
    variant = (
        f"{levels[0]}/rewrites"  # the oldest level with the rewrites forced on: half precision aborts there
    )
    user_suite.makepyfile(test_user=SUITE)
    result = user_suite.runpytest_subprocess(
        "--convergence", f"--convergence-kernels={variant}", "--convergence-results=variant.json", "-rs"
    )
    result.assert_outcomes(failed=1, skipped=1)  # float32 trains (no snapshot yet), float16 is skipped
    result.stdout.fnmatch_lines([f"*hidden ?float16?: the {variant} kernel variant cannot run float16 here*"])
    machine = json.loads((user_suite.path / "variant.json").read_text())["machine"]
    assert f"ONEDNN_MAX_CPU_ISA={levels[0].upper()}" in machine["onednn"]
    assert "TF_ENABLE_ONEDNN_OPTS=1" in machine["onednn"]


def test_snapshots_are_never_written_under_another_cpus_kernels(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=SUITE)
    result = user_suite.runpytest("--convergence", "--snapshot-update", "--convergence-kernels=avx")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--convergence-kernels=avx trains with another CPU's kernels*drop --snapshot-update*"]
    )


def test_calibration_across_results_files_names_them_in_the_snapshot(user_suite: pytest.Pytester) -> None:
    user_suite.makepyfile(test_user=SUITE)
    user_suite.runpytest(
        "--convergence", "--convergence-dtypes=float32", "--convergence-results=other.json"
    ).assert_outcomes(failed=1)
    updated = user_suite.runpytest(
        "--convergence",
        "--convergence-dtypes=float32",
        "--snapshot-update",
        "--convergence-calibrate-with=other.json",
    )
    updated.assert_outcomes(passed=1)
    updated.stdout.fnmatch_lines(["*measured across*", "*hidden*float32*native other*"])
    (snapshot,) = (user_suite.path / "__snapshots__").rglob("*.txt")
    assert "variants=native|other" in snapshot.read_text()
    missing = user_suite.runpytest("--convergence", "--convergence-calibrate-with=nowhere/*.json")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(
        ["*--convergence-calibrate-with: no results file matches 'nowhere/[*].json'*"]
    )


def test_the_kernels_command_runs_one_session_per_variant_and_says_which_failed(tmp_path: Path) -> None:
    """``pytest-convergence kernels`` on a suite that trains nothing (so no TensorFlow is imported):
    one pytest session per variant, each with its log and the verdict table; a failing session
    makes the command fail."""
    import subprocess
    import sys

    levels = kernels.allowed(set(cpu_description()["isa"]))
    if len(levels) < 2:
        pytest.skip("not an x86 CPU with two oneDNN levels")
    (tmp_path / "test_plain.py").write_text(
        "import os\n\ndef test_cap():\n    assert os.environ['ONEDNN_MAX_CPU_ISA'] != 'AVX'\n"
    )
    command = [
        sys.executable,
        "-m",
        "pytest_convergence.cli",
        "kernels",
        "--variants",
        "sse41,avx",
        "--out",
        "k",
    ]
    done = subprocess.run([*command, "--", "test_plain.py"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^sse41 +passed", done.stdout, re.M), done.stdout
    assert re.search(r"^avx +FAILED \(exit 1\)", done.stdout, re.M), done.stdout
    assert (tmp_path / "k" / "sse41.log").is_file() and (tmp_path / "k" / "avx.log").is_file()
    assert "--convergence-calibrate-with='k/*.json'" in done.stdout
