#!/usr/bin/env python
"""Which process settings change a training history bit for bit on this machine, and which do not.

A one-off measurement, kept to repeat it on another machine: its result (21 settings x 7 cases, and
the catalogue against the Intel machine's snapshots) is docs/machine-settings.md, summed up in
docs/machines.md ("Why two CPUs part: measured"). Nothing in the package or the tests uses it.

Why this exists: the bundled catalogue's snapshots were made on an Intel CPU with AVX-512; on an AMD
EPYC with AVX2 and the same wheels, some histories part from them in the last place of the float32
loss (linear-regression float32 from step 16, bfloat16 cases further), and ONEDNN_MAX_CPU_ISA=SSE41
or TF_ENABLE_ONEDNN_OPTS=0 left linear-regression unchanged. This script measures, instead of
guessing, which knobs reach the numbers: it trains a few catalogue cases once per setting, each in a
fresh child process (threads, oneDNN, instruction-set caps, CPU affinity, numpy's SIMD dispatch and
OpenBLAS's kernel), and prints, per setting and case, whether the loss history and final weights are
bit-identical to the default run, where they first part, and where the run parts from the snapshots
in the work tree and at --snapshot-rev (by default the Intel machine's). It also hashes numpy's
float64 sin/cos/exp/log, a BLAS matmul and each generated data set in every child, and, in this
process, checks how far the float64 values behind the float32 data sets may move before the float32
data changes.

Run it from the repository root, alone on the machine (each setting trains in a new process):

    nice -n 10 .venv/bin/python tools/measure_settings.py                   # all: 14 min on 2 cores
    .venv/bin/python tools/measure_settings.py --list                       # the settings
    .venv/bin/python tools/measure_settings.py --settings default,onednn-on --cases spirals:float32
    .venv/bin/python tools/measure_settings.py --sensitivity-only           # no TensorFlow, seconds
    nice -n 10 .venv/bin/python tools/measure_settings.py --settings default,onednn-on --cases catalogue

Cases are ``spec-stem:dtype`` (spec files in fixtures/); a spec with more than --step-cap optimizer
steps (seed-hidden-relu6 has 100,000) is cut to --step-cap steps. docs/machine-settings.md holds
the results of one run and what they mean.
"""

from __future__ import annotations

import argparse
import copy
import glob
import hashlib
import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FIXTURES = REPO / "fixtures"
INTEL_SNAPSHOTS = "50180e7"
"""The last commit whose catalogue snapshots the Intel AVX-512 machine made (ccef711 regenerated them)."""
DEFAULT_CASES = (
    "linear-regression:float32",
    "linear-regression:bfloat16",
    "mlp-circles:float32",
    "mlp-circles:float64",
    "spirals:float32",
    "two-moons:float16",
    "seed-hidden-relu6:bfloat16",
)
DEFAULT_STEP_CAP = 5000
INTRA_ENV = "MEASURE_INTRA_OP_THREADS"
INTER_ENV = "MEASURE_INTER_OP_THREADS"
ONEDNN_PREFIX = "onednn_verbose,"
NUMPY_SIMD_OFF = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"
"""numpy 2.4's dispatch targets above the X86_V2 baseline (AVX2/FMA3 and AVX-512 groups); numpy
ignores, with only an ImportWarning, single features such as AVX2 or FMA3 in NPY_DISABLE_CPU_FEATURES
and refuses (RuntimeError at import) to disable the baseline. The child reports what numpy did."""
INHERITED = (
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_XLA_FLAGS",
    "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL",
    "ONEDNN_MAX_CPU_ISA",
    "ONEDNN_VERBOSE",
    "DNNL_MAX_CPU_ISA",
    "DNNL_VERBOSE",
    "NPY_DISABLE_CPU_FEATURES",
    "NPY_ENABLE_CPU_FEATURES",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    INTRA_ENV,
    INTER_ENV,
)
"""Variables that could change a history, removed from every child's environment before its own
setting is applied, so that "default" means the library defaults whatever the caller exported."""


@dataclass(frozen=True)
class Setting:
    """One way of running the children: environment variables to add and a command prefix."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    prefix: tuple[str, ...] = ()
    note: str = ""

    def describe(self) -> str:
        parts = [f"{key}={value}" for key, value in self.env.items()] + list(self.prefix)
        return " ".join(parts) or "(nothing set)"


EIGEN_GEMM = "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL"
"""Read once by TensorFlow's Eigen contraction kernel: "0" or "false" makes float32 matmuls use Eigen's
own gemm (compiled into the wheel) instead of oneDNN's dnnl_sgemm, which picks its kernel at run time
from the CPU (and from ONEDNN_MAX_CPU_ISA), whatever TF_ENABLE_ONEDNN_OPTS says."""

VERBOSE = {"ONEDNN_VERBOSE": "1"}
"""oneDNN logs every primitive it executes: logging only, so the count says whether oneDNN ran."""

SETTINGS = (
    Setting("default", note="nothing set"),
    Setting("intra-1", {INTRA_ENV: "1"}, note="tf.config.threading.set_intra_op_parallelism_threads(1)"),
    Setting("intra-2", {INTRA_ENV: "2"}, note="the same call with 2 (this machine's core count)"),
    Setting("intra-4", {INTRA_ENV: "4"}, note="the same call with 4"),
    Setting("intra-16", {INTRA_ENV: "16"}, note="the same call with 16 (a many-core CI machine)"),
    Setting("inter-1", {INTER_ENV: "1"}, note="tf.config.threading.set_inter_op_parallelism_threads(1)"),
    Setting("env-intra-1", {"TF_NUM_INTRAOP_THREADS": "1"}, note="TensorFlow's own variable"),
    Setting("taskset-0", prefix=("taskset", "-c", "0"), note="the process pinned to one CPU"),
    Setting("onednn-off", {"TF_ENABLE_ONEDNN_OPTS": "0", **VERBOSE}),
    Setting("isa-sse41", {"ONEDNN_MAX_CPU_ISA": "SSE41", **VERBOSE}),
    Setting("isa-avx", {"ONEDNN_MAX_CPU_ISA": "AVX", **VERBOSE}),
    Setting("onednn-on", {"TF_ENABLE_ONEDNN_OPTS": "1", **VERBOSE}),
    Setting("onednn-on-sse41", {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41", **VERBOSE}),
    Setting("onednn-on-avx", {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX", **VERBOSE}),
    Setting("onednn-on-intra-1", {"TF_ENABLE_ONEDNN_OPTS": "1", INTRA_ENV: "1", **VERBOSE}),
    Setting("onednn-on-intra-16", {"TF_ENABLE_ONEDNN_OPTS": "1", INTRA_ENV: "16", **VERBOSE}),
    Setting("eigen-gemm", {EIGEN_GEMM: "0", **VERBOSE}, note="Eigen's own gemm instead of oneDNN's sgemm"),
    Setting("eigen-gemm-sse41", {EIGEN_GEMM: "0", "ONEDNN_MAX_CPU_ISA": "SSE41", **VERBOSE}),
    Setting("eigen-gemm-intra-16", {EIGEN_GEMM: "0", INTRA_ENV: "16", **VERBOSE}),
    Setting("numpy-no-simd", {"NPY_DISABLE_CPU_FEATURES": NUMPY_SIMD_OFF}, note="numpy's X86_V3+ off"),
    Setting("openblas-sandybridge", {"OPENBLAS_CORETYPE": "Sandybridge"}, note="OpenBLAS's AVX kernels"),
)


# --------------------------------------------------------------------------------------- hashing
def digest(*arrays: Any) -> str:
    """sha256 of the arrays' dtypes, shapes and bytes, in order (first 16 hex digits)."""
    sha = hashlib.sha256()
    for array in arrays:
        value = np.ascontiguousarray(np.asarray(array))
        sha.update(f"{value.dtype.str}{value.shape}".encode())
        sha.update(value.tobytes())
    return sha.hexdigest()[:16]


def data_arrays(data: Any) -> list[np.ndarray]:
    """The arrays of a case's x or y (an array, or a list/dict of them)."""
    if isinstance(data, Mapping):
        return [np.asarray(data[key]) for key in sorted(data)]
    if isinstance(data, (list, tuple)):
        return [np.asarray(item) for item in data]
    return [np.asarray(data)]


# --------------------------------------------------------------------- float64 behind the datasets
def _finish_float64(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, noise: float, shuffle: bool
) -> Any:
    """What ``datasets._finish`` computes before its float32 cast (on a copy of its generator)."""
    rng = copy.deepcopy(rng)
    x = x + noise * rng.standard_normal(x.shape)
    if shuffle:
        order = rng.permutation(len(x))
        x, y = x[order], y[order]
    return x, y


@contextmanager
def capture_float64() -> Iterator[list[np.ndarray]]:
    """Record the float64 x of every two-class generator (circles, spirals, two_moons...) call."""
    from pytest_convergence.spec import datasets

    captured: list[np.ndarray] = []
    original = datasets._finish

    def finish(
        rng: np.random.Generator, x: np.ndarray, y: np.ndarray, noise: float, *, shuffle: bool = True
    ) -> Any:
        x64, _ = _finish_float64(rng, x, y, noise, shuffle)
        result = original(rng, x, y, noise, shuffle=shuffle)
        if not np.array_equal(x64.astype(np.float32), result[0]):
            raise RuntimeError("datasets._finish changed: update _finish_float64 in this script")
        captured.append(x64)
        return result

    datasets._finish = finish
    try:
        yield captured
    finally:
        datasets._finish = original


def data_table(stem: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    document = tomllib.loads((FIXTURES / f"{stem}.convergence.toml").read_text(encoding="utf-8"))
    return dict(document.get("data", {}))


def linear_regression_parts(stem: str) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """x, w, b and the scaled noise of the ``linear_regression`` generator, drawn as it draws them."""
    from pytest_convergence.spec import datasets

    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(datasets.linear_regression).parameters.items()
    }
    params = {**defaults, **{k: v for k, v in data_table(stem).items() if k != "generator"}}
    rng = np.random.default_rng(params["seed"])
    weights = rng.standard_normal(params["features"])
    bias = float(rng.standard_normal())
    x = rng.standard_normal((params["samples"], params["features"]))
    noise = params["noise"] * rng.standard_normal(params["samples"])
    return x, weights, bias, noise


# ------------------------------------------------------------------------------------ child side
def numpy_probes() -> dict[str, str]:
    """Hashes of results that numpy's CPU dispatch or OpenBLAS's kernel choice could change."""
    rng = np.random.default_rng(12345)
    x = np.concatenate([np.linspace(-20.0, 20.0, 40001), rng.uniform(-1000.0, 1000.0, 20000)])
    a = rng.standard_normal((200, 3))
    w = rng.standard_normal(3)
    big = rng.standard_normal((300, 64))
    return {
        "sin f64": digest(np.sin(x)),
        "cos f64": digest(np.cos(x)),
        "exp f64": digest(np.exp(x / 50.0)),
        "log f64": digest(np.log(np.abs(x) + 1e-3)),
        "sin f32": digest(np.sin(x.astype(np.float32))),
        "exp f32": digest(np.exp((x / 50.0).astype(np.float32))),
        "matmul f64 200x3 @ 3": digest(a @ w),
        "matmul f64 300x64 @ 64x64": digest(big @ big[:64].T),
    }


def openblas_core() -> str:
    import ctypes

    for library in glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "*openblas*.so*")):
        try:
            lib = ctypes.CDLL(library)
            for name in (
                "scipy_openblas_get_corename64_",
                "scipy_openblas_get_corename",
                "openblas_get_corename",
            ):
                if hasattr(lib, name):
                    function = getattr(lib, name)
                    function.restype = ctypes.c_char_p
                    return str(function().decode())
        except OSError:
            continue
    return "?"


def child_main(cases: Sequence[str], out: Path, step_cap: int) -> None:
    """Train every case once in this process; hashes go to ``out``.json, the losses to ``out``.npz.

    Not to stdout, where oneDNN's log (ONEDNN_VERBOSE) shares the stream with anything printed."""
    import tensorflow as tf

    cpu_features = importlib.import_module("numpy._core._multiarray_umath").__cpu_features__

    for variable, configure in (
        (INTRA_ENV, tf.config.threading.set_intra_op_parallelism_threads),
        (INTER_ENV, tf.config.threading.set_inter_op_parallelism_threads),
    ):
        if os.environ.get(variable):
            configure(int(os.environ[variable]))  # before anything runs: the pools are made once
    from pytest_convergence.backend import train
    from pytest_convergence.spec.loader import load_spec

    try:
        from tensorflow.python.util import _pywrap_util_port

        onednn: Any = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = "?"
    results: dict[str, Any] = {}
    losses: dict[str, np.ndarray] = {}
    for key in cases:
        stem, dtype = key.split(":")
        with capture_float64() as captured:
            spec = load_spec(FIXTURES / f"{stem}.convergence.toml")
        case = spec.case
        if case.steps is not None and case.steps > step_cap:
            case = case.with_(steps=step_cap)
        float64 = list(captured)
        if data_table(stem).get("generator") == "linear_regression":
            x, weights, bias, noise = linear_regression_parts(stem)
            float64 = [x @ weights + bias + noise]
        start = time.perf_counter()
        run = train(case, dtype)
        weights_sha = digest(*[run.final_weights[name] for name in sorted(run.final_weights)])
        results[key] = {
            "loss": digest(run.loss),
            "weights": weights_sha,
            "data": digest(*data_arrays(case.x), *data_arrays(case.y)),
            "data64": digest(*float64) if float64 else None,
            "steps": int(run.loss.shape[0]),
            "seconds": round(time.perf_counter() - start, 2),
        }
        losses[key.replace(":", "__")] = np.asarray(run.loss)
    savez: Any = np.savez  # numpy's stub reads a keyword array named allow_pickle as the flag
    savez(out.with_suffix(".npz"), **losses)
    state = {
        "numpy X86_V3": bool(cpu_features.get("X86_V3")),
        "openblas core": openblas_core(),
        "oneDNN on": onednn,
        "intra/inter": f"{tf.config.threading.get_intra_op_parallelism_threads()}/"
        f"{tf.config.threading.get_inter_op_parallelism_threads()}",
        "OS threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else -1,
        "usable CPUs": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else -1,
    }
    payload = {"cases": results, "probes": numpy_probes(), "state": state}
    out.with_suffix(".json").write_text(json.dumps(payload), encoding="utf-8")


# ----------------------------------------------------------------------------------- parent side
@dataclass
class Outcome:
    setting: Setting
    seconds: float
    payload: dict[str, Any] | None = None
    losses: dict[str, np.ndarray] = field(default_factory=dict)
    onednn_calls: int = 0
    onednn_isa: str = ""
    onednn_primitives: set[str] = field(default_factory=set)
    error: str = ""


def child_env(setting: Setting) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in INHERITED}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(setting.env)
    return env


def run_setting(setting: Setting, cases: Sequence[str], workdir: Path, step_cap: int) -> Outcome:
    out = workdir / setting.name
    command = [
        *setting.prefix,
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--out",
        str(out),
        "--step-cap",
        str(step_cap),
        "--cases",
        ",".join(cases),
    ]
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=child_env(setting), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    outcome = Outcome(setting, 0.0)
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:  # oneDNN's log can be long: count it as it streams
        if line.startswith(ONEDNN_PREFIX):
            fields = line.split(",")
            if len(fields) > 3 and fields[2] == "primitive" and fields[3] == "exec":
                outcome.onednn_calls += 1
                if len(fields) > 5:
                    outcome.onednn_primitives.add(fields[5])
            elif len(fields) > 4 and fields[2] == "info" and fields[4].startswith("isa:"):
                outcome.onednn_isa = fields[4].removeprefix("isa:").strip()
    stderr = process.stderr.read()
    code = process.wait()
    outcome.seconds = time.perf_counter() - start
    if code != 0 or not out.with_suffix(".json").is_file():
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
        outcome.error = f"exit {code}" + (f": {' | '.join(tail)[-300:]}" if tail else "")
        return outcome
    outcome.payload = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    with np.load(out.with_suffix(".npz")) as archive:
        outcome.losses = {key.replace("__", ":"): archive[key] for key in archive.files}
    return outcome


def first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """1-based step of the first loss whose bits differ (None: identical)."""
    if a.shape != b.shape:
        return int(min(a.size, b.size)) + 1
    differ = np.flatnonzero(a.view(np.uint64) != b.view(np.uint64))
    return int(differ[0]) + 1 if differ.size else None


def cell(
    outcome: Outcome, reference: Outcome, key: str, groups: dict[str, dict[tuple[str, str], str]]
) -> str:
    if outcome.error or outcome.payload is None:
        return "crashed"
    if reference.payload is None:
        return "?"
    mine, theirs = outcome.payload["cases"][key], reference.payload["cases"][key]
    letter = groups[key][(mine["loss"], mine["weights"])]
    data = "" if mine["data"] == theirs["data"] else "data DIFFERS, "
    if (mine["loss"], mine["weights"]) == (theirs["loss"], theirs["weights"]):
        return f"{data}same" if data else "same"
    step = first_difference(outcome.losses[key], reference.losses[key])
    where = f"@{step}" if step is not None else " (weights only)"
    return f"{data}DIFFERS{where} [{letter}]"


def snapshot_text(key: str, revision: str) -> str | None:
    """The snapshot of ``key`` in the work tree (revision "") or at a git revision; None if none."""
    stem, dtype = key.split(":")
    relative = f"fixtures/__snapshots__/{stem}.convergence/{stem}[{dtype}].convergence.txt"
    if not revision:
        path = REPO / relative
        return path.read_text(encoding="utf-8") if path.is_file() else None
    shown = subprocess.run(
        ["git", "show", f"{revision}:{relative}"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return shown.stdout if shown.returncode == 0 else None


def snapshot_cell(outcome: Outcome, key: str, text: str | None) -> str:
    """Whether the run prints the snapshot's loss at every checkpoint it reaches (format_number's digits)."""
    from pytest_convergence.snapshot.format import SnapshotFormatError, Trajectory, format_number

    if outcome.error or key not in outcome.losses:
        return "-"
    if text is None:
        return "no snapshot"
    try:
        stored = Trajectory.parse(text)
    except SnapshotFormatError as error:  # e.g. a snapshot being rewritten in the work tree
        return f"unreadable snapshot ({str(error)[:40]})"
    loss = outcome.losses[key]
    reached = stored.steps <= loss.size
    if not reached.any():
        return "-"
    steps, values = stored.steps[reached], stored.losses[reached]
    mine = loss[steps - 1]
    printed = [format_number(v, stored.loss_dtype) for v in mine]
    differ = [i for i, v in enumerate(values) if printed[i] != format_number(v, stored.loss_dtype)]
    capped = f" (first {loss.size})" if loss.size < stored.total_steps else ""
    if not differ:
        return f"matches{capped}"
    relative = np.abs(mine - values) / np.maximum(np.abs(values), np.finfo(np.float32).tiny)
    return f"parts @{int(steps[differ[0]])}, max rel {np.max(relative):.1e}{capped}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def report(outcomes: Sequence[Outcome], cases: Sequence[str], revision: str) -> list[str]:
    reference = outcomes[0]
    groups: dict[str, dict[tuple[str, str], str]] = {key: {} for key in cases}
    for outcome in outcomes:
        for key in cases:
            if outcome.payload is not None:
                result = outcome.payload["cases"][key]
                signature = (result["loss"], result["weights"])
                groups[key].setdefault(signature, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[len(groups[key]) % 26])
    columns = [key.replace(":", " ") for key in cases]
    lines = [
        f"Loss history and final weights against {reference.setting.name!r} "
        "(same: bit-identical; DIFFERS@N: first differing step; [letter]: settings with equal letters "
        "agree bit for bit with each other):",
        "",
    ]
    lines += markdown(
        ["setting", *columns],
        [[o.setting.name] + [cell(o, reference, key, groups) for key in cases] for o in outcomes],
    )
    for where in ("", revision) if revision else ("",):
        texts = {key: snapshot_text(key, where) for key in cases}
        title = f"at git revision {where}" if where else "in the work tree"
        lines += ["", f"Each run's loss against the snapshot {title} (first checkpoint that differs):", ""]
        lines += markdown(
            ["setting", *columns],
            [[o.setting.name] + [snapshot_cell(o, k, texts[k]) for k in cases] for o in outcomes],
        )
    probe_names = list(reference.payload["probes"]) if reference.payload else []
    lines += ["", "numpy and OpenBLAS in the same children (same / DIFFERS from the first row):", ""]
    header = ["setting", *probe_names, "datasets f64", "datasets f32"]
    rows = []
    for outcome in outcomes:
        if outcome.payload is None or reference.payload is None:
            rows.append([outcome.setting.name, *(["crashed"] * (len(header) - 1))])
            continue
        mine, theirs = outcome.payload, reference.payload
        row = [outcome.setting.name]
        row += ["same" if mine["probes"][n] == theirs["probes"][n] else "DIFFERS" for n in probe_names]
        for field_name in ("data64", "data"):
            differ = [k for k in cases if mine["cases"][k][field_name] != theirs["cases"][k][field_name]]
            row.append("DIFFERS: " + ", ".join(differ) if differ else "same")
        rows.append(row)
    lines += markdown(header, rows)
    lines += ["", "What each child ran with:", ""]
    state_names = list(reference.payload["state"]) if reference.payload else []
    rows = []
    for outcome in outcomes:
        state = outcome.payload["state"] if outcome.payload else {}
        rows.append(
            [outcome.setting.name, outcome.setting.describe()]
            + [str(state.get(name, "-")) for name in state_names]
            + [
                f"{outcome.onednn_calls} ({', '.join(sorted(outcome.onednn_primitives)) or 'none'})"
                if "ONEDNN_VERBOSE" in outcome.setting.env
                else "not logged"
            ]
            + [outcome.onednn_isa or "-", f"{outcome.seconds:.0f}", outcome.error or outcome.setting.note]
        )
    lines += markdown(
        ["setting", "environment", *state_names, "oneDNN calls", "oneDNN ISA", "s", "note / error"], rows
    )
    return lines


# ------------------------------------------------------------------------------------ sensitivity
def nudge(values: np.ndarray, ulps: int) -> np.ndarray:
    """``values`` moved by ``ulps`` units in the last place (float64), each element independently."""
    direction = np.inf if ulps > 0 else -np.inf
    for _ in range(abs(ulps)):
        values = np.nextafter(values, direction)
    return values


class NudgedNumpy:
    """numpy with sin and cos off by a fixed number of ulps: another libm, as SVML would be."""

    def __init__(self, ulps: int) -> None:
        self.ulps = ulps

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def sin(self, x: Any) -> np.ndarray:
        return nudge(np.sin(x), self.ulps)

    def cos(self, x: Any) -> np.ndarray:
        return nudge(np.cos(x), self.ulps)


def exact_dot(x: np.ndarray, w: np.ndarray, fma: bool) -> np.ndarray:
    """Row-wise x·w rounded once (exact sum) or as an FMA chain would round it, with Fractions."""
    out = np.empty(len(x))
    for row in range(len(x)):
        if fma:
            total = float(Fraction(float(x[row, 0])) * Fraction(float(w[0])))
            for j in range(1, len(w)):
                total = float(Fraction(float(x[row, j])) * Fraction(float(w[j])) + Fraction(total))
            out[row] = total
        else:
            out[row] = float(sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(x[row], w)))
    return out


def sensitivity(cases: Sequence[str]) -> list[str]:
    """How many float32 data values move when the float64 arithmetic behind them moves a little."""
    from pytest_convergence.spec import datasets
    from pytest_convergence.spec.loader import load_spec

    lines = [
        "Sensitivity of the float32 data sets (what every dtype trains on) to the float64 arithmetic "
        "behind them: changed values, float64 before the cast / float32 after it:",
        "",
    ]
    rows = []
    for stem in dict.fromkeys(key.split(":")[0] for key in cases):
        generator = data_table(stem).get("generator")
        if generator in ("circles", "spirals", "two_moons"):
            with capture_float64() as base64:
                base = load_spec(FIXTURES / f"{stem}.convergence.toml").case.x
            for ulps in (-4, -2, -1, 1, 2, 4):
                datasets.np = NudgedNumpy(ulps)  # type: ignore[assignment]
                try:
                    with capture_float64() as moved64:
                        moved = load_spec(FIXTURES / f"{stem}.convergence.toml").case.x
                finally:
                    datasets.np = np
                changed64 = int(np.sum(moved64[0] != base64[0]))
                changed32 = int(np.sum(np.asarray(moved) != np.asarray(base)))
                rows.append(
                    [stem, f"np.sin and np.cos {ulps:+d} ulp", f"{changed64} / {changed32} of {base.size}"]
                )
        elif generator == "linear_regression":
            x, weights, bias, noise = linear_regression_parts(stem)
            here = x @ weights
            loaded = load_spec(FIXTURES / f"{stem}.convergence.toml").case.y
            if not np.array_equal((here + bias + noise).astype(np.float32), np.asarray(loaded)):
                rows.append([stem, "replica of the generator", "does not match: update this script"])
                continue
            variants = {
                "x @ w summed left to right, no FMA": (x * weights).cumsum(axis=1)[:, -1],
                "x @ w as an FMA chain": exact_dot(x, weights, fma=True),
                "x @ w rounded once (exact)": exact_dot(x, weights, fma=False),
                **{f"x @ w {u:+d} ulp": nudge(here, u) for u in (-4, -1, 1, 4)},
            }
            for name, dot in variants.items():
                y64 = dot + bias + noise
                changed64 = int(np.sum(y64 != here + bias + noise))
                changed32 = int(np.sum(y64.astype(np.float32) != np.asarray(loaded)))
                rows.append([stem, name, f"{changed64} / {changed32} of {y64.size}"])
    return lines + markdown(["spec", "float64 change", "changed f64 / f32"], rows)


# ----------------------------------------------------------------------------------------- main
def catalogue_cases(revision: str) -> list[str]:
    """Every spec:dtype with a snapshot at ``revision`` (the work tree's when empty)."""
    if revision:
        listed = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", revision, "fixtures/__snapshots__"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    else:
        listed = [str(path) for path in (FIXTURES / "__snapshots__").glob("*/*.convergence.txt")]
    cases = []
    for name in sorted(Path(item).name.removesuffix(".convergence.txt") for item in listed):
        stem, _, dtype = name.partition("[")
        if dtype and (FIXTURES / f"{stem}.convergence.toml").is_file():
            cases.append(f"{stem}:{dtype.rstrip(']')}")
    return cases


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help="spec-stem:dtype, comma-separated, or 'catalogue': every case with a snapshot at --snapshot-rev",
    )
    parser.add_argument("--settings", default="", help="setting names, comma-separated (default: all)")
    parser.add_argument("--step-cap", type=int, default=DEFAULT_STEP_CAP, help="cut longer step budgets")
    parser.add_argument(
        "--snapshot-rev",
        default=INTEL_SNAPSHOTS,
        help="also compare with the snapshots at this git revision ('' for the work tree only)",
    )
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--sensitivity-only", action="store_true", help="only the data-set check (no TF)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = [key.strip() for key in args.cases.split(",") if key.strip()]
    if cases == ["catalogue"]:
        cases = catalogue_cases(args.snapshot_rev)
    if args.child:
        child_main(cases, args.out, args.step_cap)
        return 0
    if args.list:
        for setting in SETTINGS:
            print(f"{setting.name:22} {setting.describe()}  {setting.note}")
        return 0
    for key in cases:
        stem, _, dtype = key.partition(":")
        if not dtype or not (FIXTURES / f"{stem}.convergence.toml").is_file():
            print(
                f"error: {key!r} is not spec-stem:dtype with fixtures/{stem}.convergence.toml",
                file=sys.stderr,
            )
            return 2
    if args.sensitivity_only:
        print("\n".join(sensitivity(cases)))
        return 0
    wanted = [name.strip() for name in args.settings.split(",") if name.strip()]
    known = {setting.name: setting for setting in SETTINGS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        print(f"error: unknown setting(s) {', '.join(unknown)}; --list shows them", file=sys.stderr)
        return 2
    chosen = [known[name] for name in wanted] if wanted else list(SETTINGS)
    started = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="measure-settings-") as workdir:
        for index, setting in enumerate(chosen, 1):
            outcome = run_setting(setting, cases, Path(workdir), args.step_cap)
            status = outcome.error or "ok"
            print(
                f"[{index}/{len(chosen)}] {setting.name}: {outcome.seconds:.0f} s, {status}", file=sys.stderr
            )
            outcomes.append(outcome)
    lines = [
        f"cases: {', '.join(cases)} (step budgets over {args.step_cap} cut to {args.step_cap})",
        "",
        *report(outcomes, cases, args.snapshot_rev),
        "",
        *sensitivity(cases),
        "",
        f"total: {time.perf_counter() - started:.0f} s for {len(chosen)} settings",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
