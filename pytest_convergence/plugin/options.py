"""The plugin's switches: command-line options, ini keys and the ``convergence`` marker, validated.

Imports neither numpy nor TensorFlow: pytest loads it on every run of a project that installs the
plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ..dtypes import DEFAULT_DTYPES, DTYPES, parse_dtype_list, parse_dtype_names
from ..errors import CaseError
from ..outcome import DEFAULT_ENGINE, ENGINES, check_engine

MARKER = "convergence"
DTYPE_FIXTURE = "convergence_dtype"
MARKER_KEYWORDS = ("dtypes", "engine", "tolerance", "backends")
SPEED_RULES = ("warn", "fail", "off")
SKIP_REASON = (
    "convergence tests train models: run them with `pytest --convergence` "
    "(or set `convergence = true` in the pytest ini)"
)


@dataclass(frozen=True)
class Settings:
    """The session's switches, from the command line over the ini file."""

    enabled: bool
    dtypes: tuple[str, ...] | None
    engine: str | None
    default_engine: str
    default_dtypes: tuple[str, ...]
    repeat: int = 1
    calibrate: int = 0
    exact: bool = False
    ini_rtol: tuple[tuple[str, float], ...] = ()
    op_determinism: bool = False
    simulate: int | None = None
    speed: str = "warn"
    speed_min_time: float = 0.5
    platform_snapshots: bool = False
    explain: bool = False
    """After the summary, print every trained run's story (``--convergence-explain``)."""
    timing: bool = False
    """After the summary, print every run's phases in seconds (``--convergence-timing``)."""
    anatomy_steps: int = 0
    """First steps taken apart for the results file (``--convergence-anatomy``); 0: none."""
    replay: str | None = None
    """A gate's replay plan (``--convergence-replay``): only its runs train, taken apart."""
    calibrate_with: str | None = None
    """Results files of other kernels or machines to calibrate across (``--convergence-calibrate-with``)."""
    kernels: str | None = None
    """Another CPU's kernels to train with (``--convergence-kernels``, :mod:`..kernels`)."""
    tf32: bool | None = None
    """TF32 pinned on or off for float32 matmuls on GPUs (``--convergence-tf32``); None: the
    framework's default (:mod:`..backend.precision`)."""
    backends: tuple[str, ...] = ("tensorflow",)
    """The Keras backends every test trains on (``--convergence-backends``); by default the one
    Keras loads here (``KERAS_BACKEND``, :func:`..backends.configured`)."""


@dataclass(frozen=True)
class MarkerOptions:
    """A validated ``@pytest.mark.convergence(...)``."""

    dtypes: list[str]
    engine: str | None
    tolerance: Any
    backends: tuple[str, ...] | None = None
    """The backends this test can train on (``backends=[...]``); None: any."""


NO_MARKER = MarkerOptions(dtypes=[], engine=None, tolerance=None)
"""What a test without a ``convergence`` marker (or a spec item) gets."""


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("convergence", "training convergence (pytest-convergence)")
    group.addoption(
        "--convergence",
        action="store_true",
        default=None,
        help="train the models of convergence tests; they are skipped otherwise (default: off, unless "
        "the ini sets convergence = true).",
    )
    group.addoption(
        "--convergence-backends",
        metavar="LIST",
        default=None,
        help="comma-separated Keras backends to train every test on: tensorflow, jax, torch "
        "(default: the ini's convergence_backends, else the one Keras loads here, from KERAS_BACKEND). "
        "A backend other than this process's trains in a process of its own.",
    )
    group.addoption(
        "--convergence-dtypes",
        metavar="LIST",
        default=None,
        help=f"comma-separated dtypes to run, narrowing each test's own list; one of: {', '.join(DTYPES)} "
        "(default: every dtype each test lists).",
    )
    group.addoption(
        "--convergence-engine",
        choices=ENGINES,
        default=None,
        help="train every run with this engine, over markers and cases: loop (bit-identical to "
        "model.fit), xla (jit_compile, fastest), fit (model.fit itself) (default: the marker's or the "
        f"case's engine, else the ini's convergence_engine, else {DEFAULT_ENGINE}).",
    )
    group.addoption(
        "--convergence-repeat",
        type=int,
        metavar="N",
        default=1,
        help="train every run N times and fail, naming the first differing step, unless the "
        "histories are bit-identical (default: 1, train once).",
    )
    group.addoption(
        "--convergence-calibrate",
        type=int,
        metavar="N",
        default=0,
        help="train every run N-1 more times as other machines' rounding might (every weight one "
        "ulp away at the start and at a few later steps), print the spread and the tolerance that "
        "accepts it (rtol, event steps, unstable outcomes); with --snapshot-update the snapshots "
        "carry it ('calibrated:'), and later comparisons widen their tolerance with it "
        "(default: 0, no calibration; N is at least 2).",
    )
    group.addoption(
        "--convergence-calibrate-with",
        metavar="FILES",
        default=None,
        help="comma-separated results files (or globs) of the same suite trained with other kernels "
        "or on other machines (pytest-convergence kernels writes one per kernel variant): calibration "
        "also measures each run's spread, events and outcomes across them; alone, it calibrates "
        "from them without one-ulp reruns (default: none, the one-ulp reruns only).",
    )
    group.addoption(
        "--convergence-simulate-machine",
        type=int,
        metavar="SEED",
        default=None,
        help="train every run as another machine might (one-ulp nudges of the weights at the start "
        "and at a few seeded steps) and check every expectation and snapshot still holds; "
        "never writes snapshots. CI runs it with two seeds (default: off, train as this machine does).",
    )
    group.addoption(
        "--convergence-kernels",
        metavar="VARIANT",
        default=None,
        help="train with another CPU's real kernels, on this one: oneDNN capped to an older "
        "instruction-set level (sse41, avx, avx2, avx512_core, avx512_core_vnni, avx512_core_bf16, "
        "avx512_core_amx) with TensorFlow's oneDNN rewrites as such a CPU runs them, or set with "
        "/rewrites, /no-rewrites, /flip (avx2/no-rewrites, native/flip); 'native' clears both; "
        "'list' prints the variants this CPU allows. Set before TensorFlow is imported; checks "
        "expectations and snapshots, never writes snapshots (default: this CPU's own kernels).",
    )
    group.addoption(
        "--convergence-platform-snapshots",
        action="store_true",
        default=None,
        help="also keep a bit-exact snapshot per machine fingerprint (platform-<id>/*.exact.txt): "
        "a machine that has one must match it bit for bit, others fall back to the tolerant snapshot; "
        "written by --snapshot-update (default: off, unless the ini sets convergence_platform_snapshots).",
    )
    group.addoption(
        "--convergence-speed",
        choices=SPEED_RULES,
        default=None,
        help="what the gate does with a run that got slower beyond its timings' spread: warn, fail, "
        "or off (default: the ini's convergence_speed, else warn).",
    )
    group.addoption(
        "--convergence-results",
        metavar="PATH",
        default=None,
        help="write every run of the session to this JSON results file, the upgrade gate's input; "
        "rewritten after each test, so a session that crashes or is interrupted leaves its finished "
        "runs and names the missing ones (default: none).",
    )
    group.addoption(
        "--convergence-anatomy",
        metavar="N",
        type=int,
        default=None,
        help="take the first N steps of every run apart for the results file (batch, weights, "
        "output, loss, gradients, update, as digests), so that comparing two files names the first "
        "stage of a step that changed without replays; costs a second or more a run, only with "
        "--convergence-results (default: 0, none: the gate's replay takes changed cases apart).",
    )
    group.addoption(
        "--convergence-replay",
        metavar="PLAN",
        default=None,
        help="a replay plan written by pytest-convergence gate: train only its runs, with what it "
        "sets back, and take every step up to its last_step apart (default: none).",
    )
    group.addoption(
        "--convergence-baseline",
        metavar="PATH",
        default=None,
        help="compare this session's runs with a results file of the old framework and fail the "
        "session if the gate fails (outcome, history, final loss, steps to target, speed); it must "
        "not be the --convergence-results file (default: none).",
    )
    group.addoption(
        "--convergence-exact",
        action="store_true",
        default=False,
        help="compare loss-history snapshots bit for bit, for reruns on the same versions and "
        "machine (default: off, compare within the tolerance).",
    )
    group.addoption(
        "--convergence-explain",
        action="store_true",
        default=False,
        help="after the convergence summary, print the story of every run the session trained: "
        "what the loss and each weight did, which dtype rule caused it and what would change it "
        "(default: off, the summary table only).",
    )
    group.addoption(
        "--convergence-timing",
        action="store_true",
        default=False,
        help="after the convergence summary, print where each run's time went: build, trace, "
        "train, validation, probes, diagnosis, snapshot, anatomy and results, in seconds "
        "(default: off; the summary's 'other s' column sums all but build, trace and train).",
    )
    # --convergence-isolate and its ini key, read by plugin/isolate.py at pytest_cmdline_main
    group.addoption(
        "--convergence-isolate",
        action="store_true",
        default=None,
        help="run the session in one pytest-xdist worker, so that a native crash (an abort inside "
        "TensorFlow) fails only the test it killed and the session goes on in a new worker; needs "
        "pytest-xdist, refuses -s, --pdb and --trace; nothing to do under -n N, off under -n 0 "
        "(default: off, unless the ini sets convergence_isolate).",
    )
    parser.addini(
        "convergence_isolate",
        type="bool",
        default=False,
        help="run convergence sessions in one pytest-xdist worker, as --convergence-isolate does "
        "(default: false).",
    )
    parser.addini(
        "convergence",
        type="bool",
        default=False,
        help="always run convergence tests, as --convergence does (default: false).",
    )
    parser.addini(
        "convergence_spec_patterns",
        type="linelist",
        default=["*.convergence.toml"],
        help="file name patterns of spec files to collect (default: *.convergence.toml).",
    )
    parser.addini(
        "convergence_op_determinism",
        type="bool",
        default=False,
        help="call tf.config.experimental.enable_op_determinism() before training, for GPUs "
        "(default: false).",
    )
    parser.addini(
        "convergence_rtol",
        default="",
        help="snapshot rtol per dtype, e.g. 'float16=0.02 float32=1e-5', or one number for all "
        "(default: empty, each dtype's built-in rtol).",
    )
    parser.addini(
        "convergence_speed",
        default="warn",
        help="the gate's speed rule: warn, fail or off; --convergence-speed overrides it (default: warn).",
    )
    parser.addini(
        "convergence_platform_snapshots",
        type="bool",
        default=False,
        help="keep bit-exact per-platform snapshots beside the tolerant ones, as "
        "--convergence-platform-snapshots does (default: false).",
    )
    parser.addini(
        "convergence_speed_min_time",
        default="0.5",
        help="runs under this many CPU seconds are too short to time: the gate does not compare their "
        "speed (default: 0.5).",
    )
    parser.addini(
        "convergence_engine",
        default=DEFAULT_ENGINE,
        help=f"engine for runs that name none: {', '.join(ENGINES)} (default: {DEFAULT_ENGINE}).",
    )
    parser.addini(
        "convergence_backends",
        default="",
        help="Keras backends to train every test on, comma-separated (default: the one Keras loads, "
        "from KERAS_BACKEND or keras.json).",
    )
    # --convergence-tf32 and its ini key (TF32 on GPUs, backend/precision.py)
    group.addoption(
        "--convergence-tf32",
        metavar="on|off",
        default=None,
        help="pin TF32 for float32 matmuls and convolutions on NVIDIA GPUs (Ampere and newer) before "
        "the first training, on every backend: off computes them in float32, as a CPU does (compare "
        "with CPU snapshots and baselines); on rounds their inputs to a 10-bit mantissa, ~3e-4 "
        "relative per matmul (default: the ini's convergence_tf32, else the framework's own: "
        "TensorFlow and JAX on, PyTorch off for matmuls).",
    )
    parser.addini(
        "convergence_tf32",
        default="",
        help="pin TF32 on GPUs, as --convergence-tf32 does: on or off (default: empty, the framework's own).",
    )
    parser.addini(
        "convergence_dtypes",
        default=",".join(DEFAULT_DTYPES),
        help="dtypes of a convergence marker that names none, comma-separated "
        f"(default: {','.join(DEFAULT_DTYPES)}).",
    )


def read_settings(config: pytest.Config) -> Settings:
    """The session's settings; a mistake is a usage error naming the option."""
    from ..tolerance import parse_ini_rtol

    try:
        option = config.getoption("--convergence-dtypes")
        dtypes = tuple(parse_dtype_list(option, where="--convergence-dtypes")) if option else None
        defaults = tuple(
            parse_dtype_list(config.getini("convergence_dtypes"), where="ini convergence_dtypes")
        )
        ini_rtol = tuple(parse_ini_rtol(str(config.getini("convergence_rtol"))).items())
        default_engine = str(config.getini("convergence_engine")).strip() or DEFAULT_ENGINE
        check_engine(default_engine, field="ini convergence_engine")
    except CaseError as error:
        raise pytest.UsageError(str(error)) from None
    repeat = config.getoption("--convergence-repeat")
    calibrate = config.getoption("--convergence-calibrate")
    if repeat < 1:
        raise pytest.UsageError(f"--convergence-repeat must be at least 1, got {repeat}")
    if calibrate < 0 or calibrate == 1:
        raise pytest.UsageError(
            f"--convergence-calibrate needs at least 2 runs to measure a spread, got {calibrate}"
        )
    simulate = config.getoption("--convergence-simulate-machine")
    if simulate is not None and _updating_snapshots(config):
        raise pytest.UsageError(
            "--convergence-simulate-machine trains as another machine might: its histories are a "
            "check, not snapshots; drop --snapshot-update (or the simulation)"
        )
    speed = config.getoption("--convergence-speed") or str(config.getini("convergence_speed")).strip()
    if speed not in SPEED_RULES:
        raise pytest.UsageError(
            f"ini convergence_speed must be one of {', '.join(SPEED_RULES)}, got {speed!r}"
        )
    min_time_text = str(config.getini("convergence_speed_min_time"))
    try:
        speed_min_time = float(min_time_text)
    except ValueError:
        raise pytest.UsageError(
            f"ini convergence_speed_min_time must be a number of seconds, got {min_time_text!r}"
        ) from None
    anatomy_steps = config.getoption("--convergence-anatomy")
    if anatomy_steps is None:
        from ..anatomy import DEFAULT_STEPS

        anatomy_steps = DEFAULT_STEPS
    if anatomy_steps < 0:
        raise pytest.UsageError(
            f"--convergence-anatomy takes a number of steps, 0 or more, got {anatomy_steps}"
        )
    kernels = config.getoption("--convergence-kernels")
    if (
        kernels is not None
        and kernels.strip().lower() not in ("native", "list")
        and _updating_snapshots(config)
    ):
        raise pytest.UsageError(
            f"--convergence-kernels={kernels} trains with another CPU's kernels: its histories are a "
            "check, not snapshots; drop --snapshot-update (or the kernel variant)"
        )
    backends = _backends(config)
    enabled = config.getoption("--convergence")
    return Settings(
        enabled=bool(enabled if enabled is not None else config.getini("convergence")),
        dtypes=dtypes,
        engine=config.getoption("--convergence-engine"),
        default_engine=default_engine,
        default_dtypes=defaults,
        repeat=repeat,
        calibrate=calibrate,
        exact=config.getoption("--convergence-exact"),
        ini_rtol=ini_rtol,
        op_determinism=bool(config.getini("convergence_op_determinism")),
        simulate=simulate,
        speed=speed,
        speed_min_time=speed_min_time,
        platform_snapshots=bool(
            config.getoption("--convergence-platform-snapshots")
            or config.getini("convergence_platform_snapshots")
        ),
        explain=config.getoption("--convergence-explain"),
        timing=config.getoption("--convergence-timing"),
        anatomy_steps=anatomy_steps,
        replay=config.getoption("--convergence-replay"),
        kernels=kernels,
        calibrate_with=config.getoption("--convergence-calibrate-with"),
        tf32=_tf32(config),
        backends=backends,
    )


def _backends(config: pytest.Config) -> tuple[str, ...]:
    """``--convergence-backends``, else the ini's, else the backend Keras loads in this process."""
    from ..backends import BackendError, configured, parse

    option = config.getoption("--convergence-backends")
    ini = str(config.getini("convergence_backends")).strip()
    try:
        if option:
            return tuple(parse(option, "--convergence-backends"))
        if ini:
            return tuple(parse(ini, "ini convergence_backends"))
        return tuple(parse(configured(), "KERAS_BACKEND"))
    except BackendError as error:
        raise pytest.UsageError(str(error)) from None


TF32_VALUES = {"on": True, "off": False}


def _tf32(config: pytest.Config) -> bool | None:
    """``--convergence-tf32``, else the ini's ``convergence_tf32``: True (on), False (off), None
    (the framework's default); anything else is a usage error naming the option and the fix."""
    option = config.getoption("--convergence-tf32")
    if option is not None:
        where, text, example = "--convergence-tf32", str(option), "--convergence-tf32=off"
    else:
        where, example = "ini convergence_tf32", "convergence_tf32 = off"
        text = str(config.getini("convergence_tf32"))
        if not text.strip():
            return None
    value = text.strip().lower()
    if value not in TF32_VALUES:
        raise pytest.UsageError(
            f"{where} must be on or off, got {text!r}\n  fix: {example} computes float32 matmuls on "
            "GPUs in float32 (as a CPU does), on lets Ampere and newer GPUs round their inputs to "
            f"TF32; leave {where.removeprefix('ini ')} out to keep the framework's default"
        )
    return TF32_VALUES[value]


def _updating_snapshots(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("--snapshot-update"))
    except ValueError:  # syrupy not loaded
        return False


def marker_options(marker: pytest.Mark, defaults: tuple[str, ...], where: str) -> MarkerOptions:
    """Validate a ``convergence`` marker: its dtypes (in order), engine and snapshot tolerance."""
    if marker.args:
        raise CaseError(
            "the convergence marker takes keywords only",
            field=where,
            fix='write @pytest.mark.convergence(dtypes=["float16", "float32"])',
        )
    unknown = sorted(set(marker.kwargs) - set(MARKER_KEYWORDS))
    if unknown:
        raise CaseError(
            f"unknown keyword(s) {', '.join(unknown)} in @pytest.mark.convergence; "
            f"valid keywords are: {', '.join(MARKER_KEYWORDS)}",
            field=where,
        )
    # a list, as in dtypes=["float16"]: dtypes="float16" is refused, unlike the ini's comma-separated list
    given = marker.kwargs.get("dtypes", list(defaults))
    dtypes = parse_dtype_names(given, where=f"{where} dtypes")
    engine = marker.kwargs.get("engine")
    if engine is not None:
        check_engine(engine, field=f"{where} engine")
    tolerance = marker.kwargs.get("tolerance")
    if tolerance is not None:
        from ..tolerance import resolve

        for dtype in dtypes:
            resolve(dtype, marker=tolerance)
    backends = None
    if "backends" in marker.kwargs:
        from ..backends import BackendError, parse

        given_backends = marker.kwargs["backends"]
        if isinstance(given_backends, str):
            raise CaseError(
                "backends takes a list", field=f"{where} backends", fix='write backends=["tensorflow", "jax"]'
            )
        try:
            backends = tuple(parse(list(given_backends), f"{where} backends"))
        except BackendError as error:
            raise CaseError(str(error).splitlines()[0], field=f"{where} backends") from None
    return MarkerOptions(dtypes=dtypes, engine=engine, tolerance=tolerance, backends=backends)


def item_marker(item: pytest.Item, defaults: tuple[str, ...]) -> MarkerOptions:
    """The validated marker of a Python test; spec items and unmarked tests get :data:`NO_MARKER`."""
    marker = item.get_closest_marker(MARKER)
    if marker is None or not isinstance(item, pytest.Function):
        return NO_MARKER
    return marker_options(marker, defaults, item.name)


def item_backend(item: pytest.Item) -> str:
    """The backend an item trains on: its dtype parameter's, or a spec item's own."""
    from ..backends import DEFAULT

    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        return str(getattr(callspec.params.get(DTYPE_FIXTURE), "backend", DEFAULT))
    return str(getattr(item, "convergence_backend", DEFAULT))


def item_dtype(item: pytest.Item) -> str | None:
    """The dtype an item trains in: its parametrization, or a spec item's own dtype."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        value = callspec.params.get(DTYPE_FIXTURE)
        return None if value is None else str(value)
    return getattr(item, "convergence_dtype", None)
