"""A crash costs one run: what a pytest-xdist worker leaves behind for the controller to read
when a native abort inside TensorFlow kills it.

A process that dies of a signal runs no Python afterwards: no ``finally``, no report, no
``sessionfinish``. So the worker writes what the controller will need *before* each run, into a
directory the controller picked (``workerinput``), and lets the kernel keep it:

- ``<worker>.run.json``: the test, case, dtype and engine now training (written at the start of a
  run, removed at its end; present after a crash only if the crash came inside a run);
- ``<worker>.stderr``: file descriptor 2 during the run, where TensorFlow's C++ logging writes
  (copied back to the previous fd 2 after the run, so pytest's capture still sees it);
- ``<worker>.fault``: Python's :mod:`faulthandler`, for the whole worker session: the fatal
  signal's name and the Python stack the process died in.

The controller reads them in xdist's ``pytest_handlecrashitem`` and turns xdist's one line ("worker
'gw0' crashed while running ...") into the run's failure: the case, the dtype, the signal and the
last lines TensorFlow printed. Everything here is plain files and text: the parsing is reachable
from a unit test without pytest-xdist or TensorFlow.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CRASH_DIR = "convergence_crash_dir"
"""The ``workerinput`` key of the directory the controller reads after a worker crashed."""
STDERR_LINES = 12
"""Lines of the run's stderr shown in the crash report: TensorFlow's last words."""
STACK_FRAMES = 8
"""Python frames shown, innermost first: where in the user's code the process died."""

FATAL_ERRORS = {
    "Aborted": "SIGABRT",
    "Segmentation fault": "SIGSEGV",
    "Bus error": "SIGBUS",
    "Floating-point exception": "SIGFPE",
    "Floating point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
}
"""The fatal errors faulthandler names, and their signals."""


def note_path(directory: Path, worker: str) -> Path:
    return Path(directory) / f"{worker}.run.json"


def stderr_path(directory: Path, worker: str) -> Path:
    return Path(directory) / f"{worker}.stderr"


def fault_path(directory: Path, worker: str) -> Path:
    return Path(directory) / f"{worker}.fault"


class RunWatch:
    """The worker's side: leaves, for each run, what the controller needs if the process dies."""

    def __init__(self, directory: Path, worker: str) -> None:
        self.directory = Path(directory)
        self.worker = worker
        self._fault: IO[bytes] | None = None

    def start(self) -> None:
        """Send faulthandler's report to this worker's file, for the rest of the session.

        Called at ``pytest_sessionstart``, after pytest's own faulthandler plugin pointed it at
        stderr: a worker's stderr is the controller's terminal, where the report would scroll past
        as a wall of frames instead of landing in the failed run's report.
        """
        import faulthandler

        self.directory.mkdir(parents=True, exist_ok=True)
        self._fault = open(fault_path(self.directory, self.worker), "wb")  # noqa: SIM115 (held open)
        # every thread: TensorFlow aborts in threads of its own, which have no Python frames
        faulthandler.enable(file=self._fault, all_threads=True)

    def stop(self) -> None:
        import faulthandler

        if self._fault is not None:
            faulthandler.disable()  # pytest's faulthandler plugin restores its own at unconfigure
            self._fault.close()
            self._fault = None

    @contextmanager
    def run(self, test: str, case: str, dtype: str, engine: str, steps: int) -> Iterator[None]:
        """Around one training: the note names it, and fd 2 goes to this worker's log meanwhile."""
        note = note_path(self.directory, self.worker)
        _write_quickly(
            note, json.dumps({"test": test, "case": case, "dtype": dtype, "engine": engine, "steps": steps})
        )
        try:
            with redirected_stderr(stderr_path(self.directory, self.worker)):
                yield
        finally:
            note.unlink(missing_ok=True)


@contextmanager
def redirected_stderr(path: Path) -> Iterator[None]:
    """File descriptor 2 into ``path`` meanwhile; afterwards its content is written to the fd 2 of
    before (pytest's capture file, or the terminal), so nothing a run printed is lost.

    Only the descriptor moves: Python's ``sys.stderr`` under pytest's capture writes to pytest's
    file directly, and what reaches fd 2 is what C++ code prints, TensorFlow's logging among it.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect: nothing to keep
        yield
        return
    log = open(path, "w+b")  # noqa: SIM115 (closed below, after fd 2 is back)
    try:
        os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        log.seek(0)
        _copy_to_fd(log, 2)
        log.close()


def _copy_to_fd(source: IO[bytes], fd: int) -> None:
    while chunk := source.read(1 << 16):
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(fd, view)
            except OSError:
                return
            view = view[written:]


def _write_quickly(path: Path, text: str) -> None:
    """Write a note that survives the process, not the machine: a temporary file renamed, with no
    fsync (the kernel keeps a dead process's writes; only a power cut would lose them)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


# ---------------------------------------------------------------------------- controller side
@dataclass
class Crash:
    """What the controller knows of a worker that died while running ``test``."""

    test: str
    worker: str
    case: str = ""
    dtype: str = ""
    engine: str = ""
    steps: int = 0
    signal: str = ""
    detail: str = ""
    stderr: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)

    @property
    def in_run(self) -> bool:
        """Whether it died inside a training (the note named this test)."""
        return bool(self.case)

    def message(self) -> str:
        """The crashed test's failure, as the user reads it under FAILURES."""
        how = self.signal or "an unknown cause"
        if self.detail and self.detail not in how:
            how += f" ({self.detail})"
        if self.in_run:
            head = (
                f"{self.case} [{self.dtype}] crashed: the process training it (engine {self.engine}, "
                f"{self.steps:,} steps) was killed by {how}"
            )
        else:
            head = f"{self.test} crashed outside a training run: its process was killed by {how}"
        lines = [
            head,
            f"  the test {self.test} ran in pytest-xdist worker {self.worker}; only this test is lost: "
            "pytest-xdist replaces the worker (up to its --max-worker-restart) and the session goes on",
        ]
        if self.stderr:
            lines.append(f"  the last {len(self.stderr)} line(s) it printed to stderr:")
            lines += [f"    | {line}" for line in self.stderr]
        elif self.in_run:
            lines.append("  it printed nothing to stderr during the run")
        if self.stack:
            lines.append("  where Python was (faulthandler, innermost first):")
            lines += [f"    {line}" for line in self.stack]
        return "\n".join(lines)


def read_crash(directory: Path, worker: str, test: str, exit_status: int | None) -> Crash:
    """What ``worker`` left in ``directory`` about its death while running ``test``."""
    crash = Crash(test=test, worker=worker)
    note = _read_json(note_path(directory, worker))
    if note.get("test") == test:
        crash.case = str(note.get("case", ""))
        crash.dtype = str(note.get("dtype", ""))
        crash.engine = str(note.get("engine", ""))
        crash.steps = int(note.get("steps", 0) or 0)
        crash.stderr = tail(_read_text(stderr_path(directory, worker)), STDERR_LINES)
    fault = _read_text(fault_path(directory, worker))
    crash.signal, crash.detail = cause(fault, exit_status)
    crash.stack = python_stack(fault, STACK_FRAMES)
    return crash


def cause(fault: str, exit_status: int | None) -> tuple[str, str]:
    """(signal or exit status, faulthandler's fatal error line) from what is known.

    The exit status is the surest (a negative one is the signal's number, as ``subprocess`` gives
    it); faulthandler's line names SIGABRT, SIGSEGV, SIGBUS, SIGFPE and SIGILL; a SIGKILL (the
    kernel's out-of-memory killer) leaves no line at all.
    """
    detail = next((line.strip() for line in fault.splitlines() if line.startswith("Fatal Python error:")), "")
    named = ""
    if detail:
        error = detail.removeprefix("Fatal Python error:").strip()
        named = FATAL_ERRORS.get(error, "")
    if exit_status is not None and exit_status < 0:
        try:
            named = signal.Signals(-exit_status).name
        except ValueError:
            named = f"signal {-exit_status}"
        if named == "SIGKILL" and not detail:
            detail = "SIGKILL cannot be caught: the kernel's out-of-memory killer sends it, among others"
    elif exit_status is not None and not named:
        named = f"exit status {exit_status}"
    return named, detail


def python_stack(fault: str, frames: int) -> list[str]:
    """The first ``frames`` frames (innermost first, as faulthandler lists them) of the thread
    running the test: the one whose stack passes through pytest. The thread that crashed may have
    no Python frames at all (TensorFlow aborts in threads of its own). Frames of pytest, pluggy,
    execnet and the plugin's own wiring below the run are left out."""
    stacks: list[tuple[bool, list[str]]] = []
    reading = False
    for line in fault.splitlines():
        if line.startswith(("Current thread", "Thread 0x", "Stack (most")):
            stacks.append((line.startswith("Current thread"), []))
            reading = True
        elif reading and line.strip().startswith("File "):
            stacks[-1][1].append(line.strip())
        else:
            reading = False
    testing = [
        (not current, _below_the_wiring(stack))
        for current, stack in stacks
        if any("/_pytest/" in frame for frame in stack)
    ]
    return next((stack[:frames] for _, stack in sorted(testing, key=lambda found: found[0]) if stack), [])


def _below_the_wiring(stack: list[str]) -> list[str]:
    """The frames above the test runner's, consecutive frames of one installed package (dozens in
    TensorFlow) folded after the first, so the user's own frames show."""
    above = list(itertools.takewhile(lambda frame: not any(part in frame for part in WIRING), stack))
    kept: list[str] = []
    for package, group in itertools.groupby(above, key=_installed_package):
        frames = list(group)
        if package and len(frames) > 1:
            more = len(frames) - 1
            kept += [frames[0], f"(and {more} more frame{'s' * (more > 1)} in {package})"]
        else:
            kept += frames
    return kept


def _installed_package(frame: str) -> str:
    marker = "/site-packages/"
    if marker not in frame:
        return ""
    return frame.split(marker, 1)[1].split("/", 1)[0]


WIRING = ("/_pytest/", "/pluggy/", "/execnet/", "/xdist/", "/pytest_convergence/plugin/")
"""Where a stack's interesting part ends: the test runner's frames, not the run's."""


def tail(text: str, count: int) -> list[str]:
    """The last ``count`` non-empty lines of ``text``, each cut to a screen's width."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [line if len(line) <= 300 else line[:297] + "..." for line in lines[-count:]]


def exit_status(node: Any, timeout: float = 2.0) -> int | None:
    """The dead worker's exit status, if execnet's popen gateway still holds its process (an
    internal of execnet, so any surprise is "unknown", never an error in the crash report)."""
    popen = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
    if popen is None:
        return None
    try:
        status = popen.wait(timeout=timeout)
    except Exception:
        return None
    return status if isinstance(status, int) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
