"""``pytest-convergence kernels``: the suite trained with other CPUs' real kernels, one session each.

oneDNN reads its instruction-set cap once per process, so each kernel variant is its own pytest
session (``--convergence-kernels``), each writing its results file. The files are the input of
``--convergence-calibrate-with`` (tolerances measured across real kernels) and a check in their own
right: each session checks every expectation and snapshot, so a variant that fails is a machine on
which the suite would fail.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from .. import kernels, tables
from ..fingerprint import cpu_description


def variants_to_run(text: str) -> list[str]:
    """The variants ``--variants`` names (``auto``: every other CPU this one can run, oldest first)."""
    flags = set(cpu_description()["isa"])
    names = kernels.others(flags) if text.strip() == "auto" else [v for v in text.split(",") if v.strip()]
    for name in names:
        kernels.parse(name, flags)  # a name this CPU cannot run is an error before anything trains
    return names


def run_kernels(arguments: argparse.Namespace) -> int:
    """Run the pytest arguments once per variant; 0 when every session passed."""
    names = variants_to_run(arguments.variants)
    out: Path = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    pytest_args = [a for a in arguments.pytest_args if a != "--"]
    rows = []
    failed = 0
    for name in names:
        results = out / f"{name.replace('/', '-')}.json"
        log = out / f"{name.replace('/', '-')}.log"
        command = [
            arguments.python,
            "-m",
            "pytest",
            "--convergence",
            f"--convergence-kernels={name}",
            f"--convergence-results={results}",
            "-p",
            "no:cacheprovider",
            *pytest_args,
        ]
        print(f"kernels {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        with log.open("w", encoding="utf-8") as sink:
            code = subprocess.run(
                command, stdout=sink, stderr=subprocess.STDOUT, env=dict(os.environ), check=False
            ).returncode
        seconds = time.monotonic() - started
        last = _last_line(log)
        failed += code != 0
        rows.append(
            (name, "passed" if code == 0 else f"FAILED (exit {code})", last, f"{seconds:.0f}", str(results))
        )
        print(f"  {rows[-1][1]}: {last} ({seconds:.0f} s; log {log})", flush=True)
    print()
    for line in tables.format_table(("variant", "verdict", "pytest", "seconds", "results"), rows):
        print(line)
    if names:
        print(
            f"\ncalibrate across them: pytest --convergence --snapshot-update --convergence-calibrate=3 "
            f"--convergence-calibrate-with='{out}/*.json' {' '.join(pytest_args)}"
        )
    return 1 if failed else 0


def _last_line(log: Path) -> str:
    lines = [line.strip("= \n") for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "(no output)")
