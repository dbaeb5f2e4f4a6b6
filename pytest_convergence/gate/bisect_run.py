"""``pytest-convergence bisect OLD NEW``: probe releases until each changed case's step is found.

It starts from a gate's two results files (and its replays, for the mechanisms), running the
gate first when they are not there. The line of configurations comes from the package index
(:mod:`.releases`); each probe installs one configuration in its own environment the way the gate
does (:func:`.upgrade._environment`: the project's own metadata and pins, reused when already
built) and trains, in one pytest session, only the cases that want that configuration next
(:class:`.bisect.Plan`).

Resumable: every probe's session writes its results file under ``WORK_DIR/bisect/OLD-to-NEW/``,
test by test (the plugin rewrites it as each test finishes), and a configuration that cannot be
used is recorded there with why. A second command reads all of it back first, so an interrupted
bisection goes on where it stopped, and a finished one reports again without training.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConvergenceError, GateError
from . import releases, upgrade
from . import results as results_file
from .bisect import Key, Plan, classify
from .releases import Configuration
from .replay_evidence import ReplayEvidence
from .results import Results, RunRecord
from .verdict import compare_results
from .verdict_data import Verdict

SKIPPED = "skipped.json"
"""The configurations a bisection could not use (by name), and why: not tried again on resume;
delete the file to try them again (after a network failure, say)."""
LEGACY_SWITCH = "TF_USE_LEGACY_KERAS"
"""What makes TensorFlow 2.16 and later load Keras 2 (tf-keras): the sessions of a tf-keras
configuration run with it set (the gate imports nothing of the backend, so it is named here)."""
MISSING_RUNS = "missing.json"
"""Per configuration (by name), the runs its sessions were asked for and did not record: a run
that fails there is not asked for again on resume."""


@dataclass(frozen=True)
class Options:
    """What ``pytest-convergence bisect`` was asked to do (the command's options)."""

    old: str
    new: str
    gate_dir: Path | None = None
    """The gate's output (its results files): default ``gate-OLD-to-NEW``, as ``gate`` writes it."""
    out: Path | None = None
    suite: str = upgrade.DEFAULT_SUITE
    package: str = upgrade.DEFAULT_PACKAGE
    work_dir: Path = upgrade.DEFAULT_WORK_DIR
    constraints: Path | None = None
    results_old: Path | None = None
    results_new: Path | None = None
    releases: tuple[str, ...] | None = None
    """The configurations between the two sides, by hand; None: from the package index."""
    venvs: dict[str, Path] = field(default_factory=dict)
    """An existing environment per configuration label (nothing installed into it)."""
    repeat: int = 1
    """Sessions per side if the gate has to run first."""

    @property
    def gate_output(self) -> Path:
        return self.gate_dir if self.gate_dir is not None else Path(f"gate-{self.old}-to-{self.new}")

    @property
    def output(self) -> Path:
        return self.out if self.out is not None else Path(f"bisect-{self.old}-to-{self.new}")

    @property
    def state(self) -> Path:
        return self.work_dir / "bisect" / f"{self.package}-{self.old}-to-{self.new}"


@dataclass
class Bisection:
    """Everything a report needs: the line, the two sides, the verdict's mechanisms and the plan."""

    path: list[Configuration]
    old: Results
    new: Results
    verdict: Verdict
    plan: Plan
    probed: dict[int, Results]
    """The merged results of each probed configuration."""
    state: Path


def bisect(options: Options, *, stdout: TextIO | None = None, python: str | None = None) -> Bisection:
    """Find each changed case's step; resumes from what ``options.state`` already holds."""
    stdout = stdout or sys.stdout
    python = python or sys.executable
    old, new, replays = _gate_results(options)
    verdict = compare_results(old, new, replays=replays)
    changed = [row for row in verdict.rows if row.mechanism is not None and row.old and row.new]
    path = _path(options, old, new, python)
    plan = Plan.start(len(path), [(row.case, row.dtype) for row in changed])
    before, after = old.by_key(), new.by_key()
    options.state.mkdir(parents=True, exist_ok=True)
    _write_json(options.state / "line.json", [c.name for c in path])
    index_of = {configuration.name: index for index, configuration in enumerate(path)}
    skipped: dict[str, str] = _read_json(options.state / SKIPPED, {})
    plan.skipped.update({index_of[name]: why for name, why in skipped.items() if name in index_of})
    missing: dict[str, list[str]] = _read_json(options.state / MISSING_RUNS, {})
    probed: dict[int, Results] = {}

    def observe(index: int, results: Results, asked: list[Key]) -> list[str]:
        """Record every changed run the probe holds (asked for or not) and, as missing, the asked
        ones it lacks; the states of the asked ones."""
        records = results.by_key()
        name = path[index].name
        lacking = {_key(label) for label in missing.get(name, [])} | set(asked)
        lacking -= set(records)
        found = {
            key: classify(before[key], after[key], records.get(key))
            for key in plan.searches
            if key in records
        }
        found |= {key: classify(before[key], after[key], None) for key in lacking if key in plan.searches}
        plan.record(index, found)
        if lacking:
            missing[name] = sorted("|".join(key) for key in lacking)
            _write_json(options.state / MISSING_RUNS, missing)
        return [found[key][0] for key in asked if key in found]

    for index, configuration in enumerate(path[1:-1], start=1):  # what earlier probes left
        earlier = _probe_results(options.state, configuration)
        if earlier is not None:
            probed[index] = earlier
            observe(index, earlier, [])
    mechanisms = {key: len(labels) for key, _, labels in verdict.mechanisms}
    print(
        f"bisect: {len(changed)} changed runs of {len(mechanisms)} mechanisms along {len(path)} "
        f"configurations ({path[0].name} .. {path[-1].name}); {len(probed)} already probed",
        file=sys.stderr,
    )
    sessions = 0
    while (step := plan.next_probe()) is not None:
        index, keys = step
        sessions += 1
        configuration = path[index]
        tests = sorted({after[key].test for key in keys if after[key].test})
        print(
            f"== probe {sessions} (about {plan.remaining()} to go): "
            f"{configuration.describe()}: {len(keys)} runs, {len(tests)} tests",
            file=sys.stderr,
        )
        try:
            if not tests:
                raise GateError("the new side's results name no test for these runs")
            results = _train(options, configuration, tests, python)
        except GateError as error:
            plan.skipped[index] = str(error)
            skipped[configuration.name] = str(error)
            _write_json(options.state / SKIPPED, skipped)
            print(f"   cannot use {configuration.name}: {error}", file=sys.stderr)
            continue
        probed[index] = results
        states = observe(index, results, keys)
        counts = {state: states.count(state) for state in sorted(set(states))}
        print("   " + ", ".join(f"{n} like {state}" for state, n in counts.items()), file=sys.stderr)
    stdout.flush()
    return Bisection(path, old, new, verdict, plan, probed, options.state)


def _gate_results(options: Options) -> tuple[Results, Results, ReplayEvidence | None]:
    """The gate's two results files (running the gate first when they are not there) and its replays."""
    gate = options.gate_output
    paths = {
        "old": options.results_old or gate / f"results-{options.old}.json",
        "new": options.results_new or gate / f"results-{options.new}.json",
    }
    for role, given in (("old", options.results_old), ("new", options.results_new)):
        if given is not None and not given.is_file():
            raise GateError(f"--results-{role} {given}: no such file; give the {role} side's results file")
    if not all(path.is_file() for path in paths.values()):
        print(f"bisect: no gate results in {gate}: running the gate first", file=sys.stderr)
        code = upgrade.gate(
            upgrade.Options(
                options.old,
                options.new,
                suite=options.suite,
                out=gate,
                repeat=options.repeat,
                package=options.package,
                venv_old=options.venvs.get(options.old),
                venv_new=options.venvs.get(options.new),
                work_dir=options.work_dir,
                constraints=options.constraints,
            ),
            stdout=sys.stderr,
        )
        if code not in (0, 1) or not all(path.is_file() for path in paths.values()):
            raise GateError(f"the gate reached no verdict (exit {code}): nothing to bisect")
    replay_dir = options.work_dir / "replay"
    replays = ReplayEvidence.load(replay_dir) if replay_dir.is_dir() else None
    return results_file.load(paths["old"]), results_file.load(paths["new"]), replays


def _path(options: Options, old: Results, new: Results, python: str) -> list[Configuration]:
    if options.releases is not None:
        return releases.explicit_path(options.old, options.new, list(options.releases))
    tensorflow = releases.available(options.package, python)
    keras_differs = old.versions.get("keras") != new.versions.get("keras")
    keras = releases.available("keras", python) if keras_differs else []
    from_keras_2 = not releases.keras_is_separate(old.versions.get("tensorflow", "0"))
    tf_keras = releases.available("tf-keras", python) if keras_differs and from_keras_2 else []
    path = releases.release_path(old.versions, new.versions, tensorflow, keras, tf_keras)
    # the two ends are the gate's own sides, named as the gate names them
    return [
        Configuration(path[0].tensorflow, path[0].keras, options.old),
        *path[1:-1],
        Configuration(path[-1].tensorflow, path[-1].keras, options.new),
    ]


def _probe_results(state: Path, configuration: Configuration) -> Results | None:
    """Every run the configuration's sessions left (an interrupted one's finished runs included)."""
    parts = sorted(_parts(state, configuration), key=_part_number)
    loaded: list[Results] = []
    for part in parts:
        try:
            loaded.append(results_file.load(part))
        except ConvergenceError:
            continue  # a session killed before its first test finished: nothing to keep
    if not loaded:
        return None
    first = loaded[0]
    records: dict[Key, RunRecord] = {}
    for results in loaded:
        for key, record in results.by_key().items():
            records.setdefault(key, record)
    return Results(list(records.values()), machine=first.machine, created=first.created)


def _key(label: str) -> Key:
    case, _, dtype = label.partition("|")
    return case, dtype


def _parts(state: Path, configuration: Configuration) -> list[Path]:
    """The configuration's own probe files: ``probe-NAME-K.json``, NAME exactly (not a longer one)."""
    pattern = re.compile(rf"probe-{re.escape(configuration.name)}-(\d+)\.json")
    return [path for path in state.glob("probe-*.json") if pattern.fullmatch(path.name)]


def _part_number(path: Path) -> int:
    tail = path.stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _train(options: Options, configuration: Configuration, tests: list[str], python: str) -> Results:
    """One probe: the configuration's environment (made once), one session of ``tests``."""
    venv = options.venvs.get(configuration.name) or _environment(options, configuration, python)
    part = options.state / f"probe-{configuration.name}-{_next_part(options.state, configuration)}.json"
    log = options.state / f"pytest-{configuration.name}.log"
    argv = [
        str(upgrade.tool(venv, "python")),
        "-m",
        "pytest",
        *tests,
        "--convergence",
        "-q",
        "-p",
        "no:cacheprovider",
        "--snapshot-warn-unused",
        f"--convergence-results={part}",
    ]
    environment = {**os.environ, LEGACY_SWITCH: "1"} if configuration.legacy_keras else None
    code = _session(argv, log, environment)
    if code in upgrade.NOTHING_RAN or not part.is_file():
        last = _last_line(log)
        raise GateError(f"its session ran nothing (pytest exit {code}: {last}; see {log})")
    found = _probe_results(options.state, configuration)
    if found is None:
        raise GateError(f"its session left no readable results (see {log})")
    return found


def _session(
    argv: list[str],
    log: Path,
    environment: dict[str, str] | None = None,
    run: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
) -> int:
    """Run one pytest session into ``log``. On Ctrl-C the session (which got it too) is given time
    to end its test and write its results file before the interrupt goes on."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = run(argv, stdout=out, stderr=subprocess.STDOUT, env=environment)
        try:
            return process.wait()
        except KeyboardInterrupt:
            try:
                process.wait(timeout=120)
            finally:  # a second Ctrl-C, or a session that will not end: no session outlives the command
                if process.poll() is None:
                    process.kill()
                    process.wait()
            raise


def _next_part(state: Path, configuration: Configuration) -> int:
    numbers = [_part_number(p) for p in _parts(state, configuration)]
    return max(numbers, default=0) + 1


def _environment(options: Options, configuration: Configuration, python: str) -> Path:
    """Make (or reuse) the configuration's environment as the gate makes its sides'."""
    suffix = f"-keras-{configuration.keras}" if configuration.keras else ""
    if configuration.legacy_keras:
        suffix = f"-tf-keras-{configuration.keras}"
    venv = options.work_dir / f"venv-{options.package}-{configuration.tensorflow}{suffix}"
    keras_pin = None if configuration.legacy_keras else configuration.keras
    side = upgrade.Side("probe", configuration.tensorflow, keras_pin, venv, False, None, configuration.name)
    constraints = None
    if options.constraints is not None:
        constraints = upgrade.filtered_constraints(options.constraints, options.package, options.work_dir)
    steps: list[upgrade.Step] = []
    if constraints is not None:
        steps.append(upgrade.WriteFile(*constraints))
    steps += upgrade._environment(side, python, options.package, constraints, upgrade.project_requirement())
    if len(steps) > (constraints is not None):
        print(f"   installing {configuration.describe()} into {venv}", file=sys.stderr)
    log = options.state / f"install-{configuration.name}.log"
    for step in steps:
        if not isinstance(step, upgrade.Command):
            upgrade.execute([step], sys.stderr)
            continue
        code = _session(list(step.argv), log)
        if code != 0:
            raise GateError(f"{shlex.join(step.argv[:6])}... failed: {_last_line(log)} (see {log})")
        if step.stamp is not None:
            step.stamp[0].write_text(step.stamp[1], encoding="utf-8")
    if configuration.legacy_keras:
        _install_tf_keras(venv, str(configuration.keras), log)
    return venv


def _install_tf_keras(venv: Path, version: str, log: Path) -> None:
    """tf-keras without its dependency on the full ``tensorflow`` wheel, which pip would install
    beside ``tensorflow-cpu`` (as ./dev does for the Keras 2 environment); once per environment."""
    marker = venv / ".pytest-convergence-tf-keras"
    if marker.is_file() and marker.read_text(encoding="utf-8") == version:
        return
    argv = [
        str(upgrade.tool(venv, "python")),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        f"tf-keras=={version}",
    ]
    if _session(argv, log) != 0:
        raise GateError(f"pip could not install tf-keras {version}: {_last_line(log)} (see {log})")
    marker.write_text(version, encoding="utf-8")


def _last_line(log: Path) -> str:
    """The log's last line that says something (pip's warnings about an index location do not)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    said = [line for line in lines if line.strip() and not line.startswith("WARNING: Location")]
    return said[-1] if said else "empty log"


def _write_json(path: Path, data: object) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(temporary, path)


def _read_json(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
    return data if isinstance(data, dict) else default


def keep_results(bisection: Bisection, directory: Path) -> dict[int, Path]:
    """Copy each probed configuration's results (and the two sides') into ``directory``: what the
    report links to. The index on the line -> the file."""
    directory.mkdir(parents=True, exist_ok=True)
    kept: dict[int, Path] = {}
    for index, results in {
        0: bisection.old,
        len(bisection.path) - 1: bisection.new,
        **bisection.probed,
    }.items():
        target = directory / f"results-{bisection.path[index].name}.json"
        results_file.write(target, results)
        kept[index] = target
    return kept
