"""``pytest-convergence gate OLD NEW``: gate a TensorFlow upgrade end to end.

For each of the two TensorFlow versions it makes (or reuses) a virtual environment, installs
pytest-convergence into it from pytest-convergence's own metadata (its declared dependencies, with
the ``plot`` extra) next to ``PACKAGE==VERSION`` (and ``keras==PIN`` when asked), trains the suite
in sessions that alternate between the versions, pools each side's sessions into one results file
(``merge --repeats``) and compares the two (``compare``): the table on stdout and in
``OUT/verdict.txt``, a markdown summary and an HTML report beside it. The exit code is compare's:
0 when the upgrade passes, 1 when it fails; 2 when the gate could not reach a verdict.

The workflow is planned first, as data (:func:`plan`: a list of steps, commands as argv lists), then
either printed (``--dry-run``) or run (:func:`execute`), so what is printed is what would run.

Only the standard library is imported here: the gate drives other environments and never trains.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse
from urllib.request import url2pathname

from ..errors import GateError

PROJECT = "pytest-convergence"
EXTRAS = "plot"
DEFAULT_SUITE = "fixtures"
DEFAULT_PACKAGE = "tensorflow-cpu"
DEFAULT_REPEAT = 3
DEFAULT_WORK_DIR = Path(".gate")
FRAMEWORK_PINS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "keras", "tf-keras")
"""Distributions whose pins are dropped from ``--constraints``: the two sides differ in exactly
these (``--package`` is dropped too). tensorflow-intel and tensorflow-macos are the tensorflow wheel
itself on Windows and macOS."""
NOTHING_RAN = (4, 5)
"""pytest's exit statuses for a usage error (such as a suite that does not exist) and for no tests
collected: a session that ends so would give an empty results file, and the gate a vacuous PASS."""
MARKER = ".pytest-convergence-gate"
"""A file in each environment the gate made, holding the install command it was made with: an
environment is reused as it is only when that command is unchanged (an interrupted install, or a
new pytest-convergence version, installs again)."""


@dataclass(frozen=True)
class Options:
    """What ``pytest-convergence gate`` was asked to do (the command's options)."""

    old: str
    new: str
    suite: str = DEFAULT_SUITE
    out: Path | None = None
    repeat: int = DEFAULT_REPEAT
    package: str = DEFAULT_PACKAGE
    keras_old: str | None = None
    keras_new: str | None = None
    venv_old: Path | None = None
    venv_new: Path | None = None
    results_old: Path | None = None
    results_new: Path | None = None
    plots: tuple[str, ...] = ()
    work_dir: Path = DEFAULT_WORK_DIR
    constraints: Path | None = None
    replay: bool = True
    """Replay changed cases to localise and confirm their mechanisms (:mod:`.replays`)."""

    @property
    def output(self) -> Path:
        return self.out if self.out is not None else Path(f"gate-{self.old}-to-{self.new}")


# The steps of a plan. Each renders as one shell line (a file written with its content), which is
# what --dry-run prints.


@dataclass(frozen=True)
class Command:
    """One command. Its stdout goes to the gate's stderr unless ``log`` (stdout and stderr into
    that file, its last line shown) or ``tee`` (stdout shown and copied into that file)."""

    argv: tuple[str, ...]
    log: Path | None = None
    tee: Path | None = None
    produces: Path | None = None
    """A file the command must leave, non-empty; without it the gate stops, naming the log."""
    tolerate_failure: bool = False
    """Its exit status is ignored (a session whose tests fail still records its results)..."""
    stop_on: tuple[int, ...] = ()
    """...except these, which stop the gate even so (a session that found nothing to run)."""
    verdict: bool = False
    """Its exit status is the gate's (compare)."""
    note: str | None = None
    """Shown on stderr before it runs."""
    stamp: tuple[Path, str] | None = None
    """A file and its text, written once the command succeeded (an environment's :data:`MARKER`)."""

    def shell(self) -> str:
        line = shlex.join(self.argv)
        if self.log is not None:
            line += f" > {_quote(self.log)} 2>&1"
        if self.tee is not None:
            line += f" | tee {_quote(self.tee)}"
        if self.tolerate_failure:
            line += " || true"
        return line


@dataclass(frozen=True)
class MakeDirs:
    paths: tuple[Path, ...]

    def shell(self) -> str:
        return shlex.join(["mkdir", "-p", *map(str, self.paths)])


@dataclass(frozen=True)
class WriteFile:
    path: Path
    text: str

    def shell(self) -> str:
        lines = self.text.splitlines()
        if len(lines) == 1:
            return f"echo {shlex.quote(lines[0])} > {_quote(self.path)}"
        return "\n".join([f"cat > {_quote(self.path)} <<'EOF'", *lines, "EOF"])


@dataclass(frozen=True)
class Remove:
    path: Path

    def shell(self) -> str:
        return f"rm -f {_quote(self.path)}"


@dataclass(frozen=True)
class RemoveTree:
    """A directory and everything in it (a previous gate's replays), if it exists."""

    path: Path

    def shell(self) -> str:
        return f"rm -rf {_quote(self.path)}"


@dataclass(frozen=True)
class Copy:
    source: Path
    target: Path

    def shell(self) -> str:
        return f"cp {_quote(self.source)} {_quote(self.target)}"


Step = Command | MakeDirs | WriteFile | Remove | RemoveTree | Copy


@dataclass(frozen=True)
class Side:
    """One side of the gate: a TensorFlow version, its environment and its results file."""

    role: str  # "old" or "new"
    version: str
    keras: str | None
    venv: Path
    reuse_venv: bool
    reuse_results: Path | None
    label: str  # names its files: results-LABEL.json, pytest-LABEL.log

    @property
    def python(self) -> Path:
        return tool(self.venv, "python")


def gate(options: Options, *, dry_run: bool = False, stdout: TextIO | None = None) -> int:
    """Plan the gate and print it (``dry_run``) or run it; the exit code of compare, or 0."""
    stdout = stdout or sys.stdout
    steps = plan(options)
    if dry_run:
        for step in steps:
            print(step.shell(), file=stdout)
        return 0
    status = execute(steps, stdout)
    out = options.output
    print(f"verdict: {out / 'verdict.md'}, report: {out / 'report.html'} (exit {status})", file=stdout)
    return status


def plan(options: Options, *, python: str | None = None) -> list[Step]:
    """Every step of the gate, in order: environments, sessions, merges, the comparison."""
    if options.repeat < 1:
        raise GateError(f"--repeat {options.repeat}: at least one session per version")
    python = python or sys.executable
    out, work = options.output, options.work_dir
    old, new = _sides(options)
    steps: list[Step] = [MakeDirs((out, work))]

    # The old side needs an environment only to train; the new one also runs the comparison.
    needed = [side for side in (old, new) if side.role == "new" or side.reuse_results is None]
    to_make = [side for side in needed if not side.reuse_venv]
    if to_make:
        project = project_requirement()
        constraints: tuple[Path, str] | None = None
        if options.constraints is not None:
            constraints = filtered_constraints(options.constraints, options.package, work)
        installs: list[Step] = []
        seen: set[Path] = set()
        for side in to_make:
            if side.venv in seen:
                continue  # old and new pin the same versions: one environment serves both
            seen.add(side.venv)
            installs += _environment(side, python, options.package, constraints, project)
        if installs and constraints is not None:
            steps.append(WriteFile(*constraints))
        steps += installs

    for k in range(1, options.repeat + 1):
        # Sessions alternate between the versions, so a stretch of load on a shared machine slows
        # both sides alike, and each case's timings are minutes apart rather than back to back.
        for side in (old, new):
            if side.reuse_results is None:
                steps += _session(side, k, options)

    for side in (old, new):
        results = out / f"results-{side.label}.json"
        if side.reuse_results is not None:
            if not _same_file(side.reuse_results, results):
                steps.append(Copy(side.reuse_results, results))
        else:
            parts = [str(_part(work, side, k)) for k in range(1, options.repeat + 1)]
            merge = (str(tool(side.venv, PROJECT)), "merge", "--repeats", str(results), *parts)
            steps.append(Command(merge))

    replays = work / "replay"
    if options.replay:
        steps += _replays(options, old, new, replays)

    plots: list[str] = []
    for name in options.plots:
        plots += ["--plot", name, str(out / f"{name.replace('[', '-').replace(']', '')}.png")]
    compare = (
        str(tool(new.venv, PROJECT)),
        "compare",
        str(out / f"results-{old.label}.json"),
        str(out / f"results-{new.label}.json"),
        "--markdown",
        str(out / "verdict.md"),
        "--html",
        str(out / "report.html"),
        *(["--replays", str(replays)] if options.replay else []),
        *plots,
    )
    steps.append(Command(compare, tee=out / "verdict.txt", verdict=True))
    return steps


def _replays(options: Options, old: Side, new: Side, directory: Path) -> list[Step]:
    """The two replay rounds (:mod:`.replays`): plan, replay each side that has an environment,
    plan the confirmations from what that found, replay them on the new side."""
    out = options.output
    project = str(tool(new.venv, PROJECT))
    results = [str(out / f"results-{side.label}.json") for side in (old, new)]
    steps: list[Step] = [RemoveTree(directory), MakeDirs((directory,))]
    steps.append(Command((project, "replay-plan", *results, "--dir", str(directory), "--round", "localise")))
    for side in (old, new):
        if side.role == "old" and side.reuse_results is not None and not side.reuse_venv:
            continue  # no environment to train the old side in: the first steps' records must do
        plan = directory / f"localise-{side.role}.json"
        log = options.work_dir / f"replay-{side.label}.log"
        steps.append(Command((project, "replay", str(plan), "--python", str(side.python), "--log", str(log))))
    steps.append(Command((project, "replay-plan", *results, "--dir", str(directory), "--round", "confirm")))
    confirm = (
        project,
        "replay",
        str(directory / "confirm-new.json"),
        "--python",
        str(new.python),
        "--results",
        str(directory / "results-confirm.json"),
        "--log",
        str(options.work_dir / f"replay-confirm-{new.label}.log"),
    )
    steps.append(Command(confirm))
    return steps


def execute(steps: Sequence[Step], stdout: TextIO | None = None) -> int:
    """Run the steps in order; the exit status of the verdict command (0 if none)."""
    stdout = stdout or sys.stdout
    status = 0
    for step in steps:
        if isinstance(step, MakeDirs):
            for path in step.paths:
                path.mkdir(parents=True, exist_ok=True)
        elif isinstance(step, WriteFile):
            step.path.parent.mkdir(parents=True, exist_ok=True)
            step.path.write_text(step.text, encoding="utf-8")
        elif isinstance(step, Remove):
            step.path.unlink(missing_ok=True)
        elif isinstance(step, RemoveTree):
            shutil.rmtree(step.path, ignore_errors=True)
        elif isinstance(step, Copy):
            step.target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(step.source, step.target)
        else:
            code = _run(step, stdout)
            if step.verdict:
                status = code
    return status


def project_requirement() -> list[str]:
    """How a fresh environment gets this pytest-convergence, as pip arguments, with its extra.

    From its source directory (editable) when it runs from one (:func:`source_directory`); from the
    version control URL and commit, or the archive, it was installed from (PEP 610's
    ``direct_url.json``); else from the index at its own version. Its dependencies then come from
    its own metadata, not from a list here.
    """
    source = source_directory()
    if source is not None:
        return ["-e", f"{source}[{EXTRAS}]"]
    for info in _direct_urls():
        requirement = _from_direct_url(info)
        if requirement is not None:
            return requirement
    distributions = list(metadata.distributions(name=PROJECT))
    if not distributions:
        raise GateError(
            f"{PROJECT} has no installed metadata, so the gate cannot install it elsewhere: install it "
            "with pip, or give --venv-old and --venv-new"
        )
    return [f"{PROJECT}[{EXTRAS}]=={distributions[0].version}"]


def source_directory() -> Path | None:
    """The source tree this pytest-convergence runs from, if any.

    An editable or local-directory install names it in ``direct_url.json``; a checkout whose own
    egg-info shadows that metadata (Python started in the checkout) is found by this file's place.
    """
    for info in _direct_urls():
        local = _local_path(info)
        if "dir_info" in info and local is not None and (local / "pyproject.toml").is_file():
            return local
    checkout = Path(__file__).resolve().parents[2]
    return checkout if _is_source(checkout) else None


def filtered_constraints(path: Path, package: str, work: Path) -> tuple[Path, str]:
    """The constraints file without its TensorFlow and Keras pins: where to write it, and its text.

    ``path`` is looked up in the current directory, then in pytest-convergence's source directory.
    Nested ``-c``/``-r`` files are kept (made absolute), not filtered.
    """
    source = _find_constraints(path)
    drop = {_canonical(name) for name in (*FRAMEWORK_PINS, package)}
    kept: list[str] = []
    dropped: list[str] = []
    for raw in source.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        nested = re.match(r"(-c|-r|--constraint|--requirement)(\s+|=)(\S+)$", line)
        if nested is not None:
            target = nested.group(3)
            if "://" not in target and not Path(target).is_absolute():
                target = str((source.parent / target).resolve())
            kept.append(f"{nested.group(1)} {target}")
            continue
        name = re.match(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)", line)
        if name is not None and _canonical(name.group(1)) in drop:
            dropped.append(name.group(1))
            continue
        kept.append(line)
    header = f"# {source} without its {', '.join(dropped) or 'TensorFlow and Keras'} pins"
    target = work / f"{source.stem}-without-tensorflow{source.suffix or '.txt'}"
    return target, "\n".join([header, *kept]) + "\n"


def tool(venv: Path, name: str) -> Path:
    """A command installed in a virtual environment."""
    if os.name == "nt":
        return venv / "Scripts" / f"{name}.exe"
    path = venv / "bin" / name
    if name == "python" and not path.exists() and (venv / "bin" / "python3").exists():
        return venv / "bin" / "python3"
    return path


def _sides(options: Options) -> tuple[Side, Side]:
    labels = {"old": options.old, "new": options.new}
    if options.old == options.new:  # the same TensorFlow: tell the sides apart by Keras, or by role
        keras = {"old": options.keras_old, "new": options.keras_new}
        labels = {role: f"{options.old}-keras-{pin}" if pin else options.old for role, pin in keras.items()}
        if labels["old"] == labels["new"]:
            labels = {role: f"{label}-{role}" for role, label in labels.items()}
    sides = []
    for role, version, keras_pin, venv, results in (
        ("old", options.old, options.keras_old, options.venv_old, options.results_old),
        ("new", options.new, options.keras_new, options.venv_new, options.results_new),
    ):
        if results is not None and not results.is_file():
            raise GateError(f"--results-{role} {results}: no such file")
        if venv is not None and not tool(venv, "python").exists():
            raise GateError(f"--venv-{role} {venv}: not a virtual environment (no {tool(venv, 'python')})")
        made = (
            options.work_dir / f"venv-{options.package}-{version}{f'-keras-{keras_pin}' if keras_pin else ''}"
        )
        sides.append(Side(role, version, keras_pin, venv or made, venv is not None, results, labels[role]))
    return sides[0], sides[1]


def _environment(
    side: Side, python: str, package: str, constraints: tuple[Path, str] | None, project: list[str]
) -> list[Step]:
    """Make the side's environment and install into it, unless it was made by the same command
    under the same constraints."""
    install = (
        str(side.python),
        "-m",
        "pip",
        "install",
        "--quiet",
        *(["-c", str(constraints[0])] if constraints else []),
        f"{package}=={side.version}",
        *([f"keras=={side.keras}"] if side.keras else []),
        *project,
    )
    marker = side.venv / MARKER
    record = shlex.join(install) + "\n" + (constraints[1] if constraints else "")
    if marker.is_file() and marker.read_text(encoding="utf-8") == record:
        return []
    steps: list[Step] = []
    if not side.python.exists():
        steps.append(Command((python, "-m", "venv", str(side.venv))))
    steps.append(Command(install, stamp=(marker, record)))
    return steps


def _part(work: Path, side: Side, k: int) -> Path:
    return work / f"results-{side.label}-{k}.json"


def _session(side: Side, k: int, options: Options) -> list[Step]:
    """One pytest session of the suite: test failures do not stop the gate, a missing results file does."""
    part = _part(options.work_dir, side, k)
    log = (
        options.output / f"pytest-{side.label}.log"
        if k == 1
        else options.work_dir / f"pytest-{side.label}-{k}.log"
    )
    argv = (
        str(side.python),
        "-m",
        "pytest",
        options.suite,
        "--convergence",
        "-q",
        "-p",
        "no:cacheprovider",
        "--snapshot-warn-unused",
        f"--convergence-results={part}",
    )
    where = f"{options.package} {side.version} ({side.venv})"
    note = f"== session {k} of {options.repeat}: {options.suite} on {where}"
    command = Command(argv, log=log, produces=part, tolerate_failure=True, stop_on=NOTHING_RAN, note=note)
    return [Remove(part), command]


def _run(step: Command, stdout: TextIO) -> int:
    if step.note:
        print(step.note, file=sys.stderr)
    stdout.flush()
    sys.stderr.flush()
    try:
        if step.log is not None:
            step.log.parent.mkdir(parents=True, exist_ok=True)
            with step.log.open("wb") as log:
                code = subprocess.run(step.argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
            last = step.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            if last:
                print(last[0], file=sys.stderr)
        elif step.tee is not None:
            step.tee.parent.mkdir(parents=True, exist_ok=True)
            with (
                subprocess.Popen(step.argv, stdout=subprocess.PIPE, text=True) as process,
                step.tee.open("w", encoding="utf-8") as tee,
            ):
                assert process.stdout is not None
                for line in process.stdout:
                    stdout.write(line)
                    tee.write(line)
            stdout.flush()
            code = process.returncode
        else:
            code = subprocess.run(step.argv, stdout=_stderr_fd(), check=False).returncode
    except OSError as error:
        raise GateError(f"cannot run {step.argv[0]}: {error}") from error
    if code in step.stop_on:
        raise GateError(f"the session ran no tests (pytest exit status {code}): see {step.log}")
    if code != 0 and not (step.tolerate_failure or step.verdict):
        where = f" (see {step.log})" if step.log is not None else ""
        raise GateError(f"exit status {code}{where}: {shlex.join(step.argv)}")
    if step.stamp is not None:
        path, text = step.stamp
        path.write_text(text, encoding="utf-8")
    if step.produces is not None and not (step.produces.is_file() and step.produces.stat().st_size > 0):
        raise GateError(f"the session left no results ({step.produces}): see {step.log}")
    return code


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an in-memory stream (pytest's capsys)
        return 2


def _from_direct_url(info: dict[str, object]) -> list[str] | None:
    """pip arguments that install pytest-convergence from the repository or archive it came from."""
    url = info.get("url")
    if not isinstance(url, str):
        return None
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict) and vcs.get("vcs"):
        reference = f"{vcs['vcs']}+{url}"
        if vcs.get("commit_id"):
            reference += f"@{vcs['commit_id']}"
        subdirectory = info.get("subdirectory")
        if isinstance(subdirectory, str) and subdirectory:
            reference += f"#subdirectory={subdirectory}"
        return [f"{PROJECT}[{EXTRAS}] @ {reference}"]
    local = _local_path(info)
    if "archive_info" in info and (local is None or local.is_file()):
        return [f"{PROJECT}[{EXTRAS}] @ {url}"]
    return None  # a source directory that is gone: the index, then


def _is_source(directory: Path) -> bool:
    """Whether ``directory`` is a source tree of pytest-convergence (its pyproject.toml names it)."""
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file():
        return False
    text = pyproject.read_text(encoding="utf-8", errors="replace")
    return re.search(rf"""^name\s*=\s*["']{re.escape(PROJECT)}["']""", text, re.MULTILINE) is not None


def _find_constraints(path: Path) -> Path:
    candidates = [path]
    source = source_directory()
    if not path.is_absolute() and source is not None:
        candidates.append(source / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise GateError(f"--constraints {path}: no such file (looked for {', '.join(map(str, candidates))})")


def _direct_urls() -> list[dict[str, object]]:
    """The PEP 610 records of every installed pytest-convergence metadata that has one."""
    found = []
    for distribution in metadata.distributions(name=PROJECT):
        text = distribution.read_text("direct_url.json")
        if text:
            info = json.loads(text)
            if isinstance(info, dict):
                found.append(info)
    return found


def _local_path(info: dict[str, object]) -> Path | None:
    url = info.get("url")
    if not isinstance(url, str):
        return None
    parsed = urlparse(url)
    return Path(url2pathname(parsed.path)) if parsed.scheme == "file" else None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _quote(path: Path) -> str:
    return shlex.quote(str(path))
