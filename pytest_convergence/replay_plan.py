"""A gate's replays: train some runs again, taken apart step by step, or with one thing set back.

Two results files say *that* a case changed and from which step; a results file's anatomy covers
the first few steps only. Where two histories part later, or where a suspected mechanism should
be confirmed, the gate writes a replay plan and runs a session with
``--convergence-replay=PLAN`` in one version's environment. Per planned run the session:

- sets back what the plan names to the old version's: ``loss_dtype`` (pin the loss dtype), or
  ``initial_weights`` (the values the old version's replay saved);
- trains it as usual (its record goes to the session's results file, marked as a replay);
- takes apart every step up to ``last_step`` and saves that as ``<dir>/<case>[<dtype>].npz``.

Deterministic training makes this sound: the same seed, version and machine train the same steps
again, which each replay checks (its anatomy's losses against the run's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .case import Case
from .errors import ReplayError
from .files import atomic_write_text

SCHEMA = 1
SETTINGS = ("loss_dtype", "initial_weights")
"""What a replay can set back to the old version's."""


@dataclass(frozen=True)
class Replay:
    """One planned run."""

    case: str
    dtype: str
    directory: Path
    test: str = ""
    last_step: int = 0
    """Take apart every step up to this one (0: the whole run)."""
    set_back: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.case}[{self.dtype}]"

    def anatomy_path(self, case: str, dtype: str) -> Path:
        return anatomy_path(self.directory, case, dtype)

    def apply(self, case: Case) -> Case:
        """The case with the plan's settings set back."""
        changes: dict[str, Any] = {}
        if "loss_dtype" in self.set_back:
            changes["loss_dtype"] = self.set_back["loss_dtype"]
        if "initial_weights" in self.set_back:
            from .anatomy import Anatomy

            source = Path(self.set_back["initial_weights"])
            weights = Anatomy.load(source).initial_weights
            if not weights:
                raise ReplayError(f"{source}: holds no initial weights to set back")
            changes["initial_weights"] = weights
        return case.with_(**changes) if changes else case


def anatomy_path(directory: Path, case: str, dtype: str) -> Path:
    return Path(directory) / f"{case}[{dtype}].npz"


@dataclass
class ReplayPlan:
    runs: list[Replay]

    def find(self, case: str, dtype: str) -> Replay | None:
        return next((r for r in self.runs if r.case == case and r.dtype == dtype), None)

    @property
    def tests(self) -> list[str]:
        """The test ids to run, each once, in the plan's order."""
        return list(dict.fromkeys(r.test for r in self.runs if r.test))

    def to_json(self) -> str:
        runs = [
            {
                "case": r.case,
                "dtype": r.dtype,
                "test": r.test,
                "last_step": r.last_step,
                "set_back": r.set_back,
                "directory": str(r.directory),
            }
            for r in self.runs
        ]
        return json.dumps({"schema": SCHEMA, "runs": runs}, indent=1) + "\n"

    def write(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_json())


def load_plan(path: Path) -> ReplayPlan:
    """Read a replay plan; a malformed one is an error naming the file and the field."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReplayError(
            f"{path}: no such replay plan (the gate writes it: pytest-convergence gate)"
        ) from None
    except (OSError, ValueError) as error:
        raise ReplayError(f"{path}: not a readable replay plan: {error}") from None
    if (
        not isinstance(document, dict)
        or document.get("schema") != SCHEMA
        or not isinstance(document.get("runs"), list)
    ):
        raise ReplayError(f"{path}: not a replay plan of schema {SCHEMA} (a 'runs' list)")
    runs = []
    for index, raw in enumerate(document["runs"]):
        where = f"{path}: runs[{index}]"
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("case"), str)
            or not isinstance(raw.get("dtype"), str)
        ):
            raise ReplayError(f"{where}: needs 'case' and 'dtype' strings")
        set_back = raw.get("set_back") or {}
        if not isinstance(set_back, dict):
            raise ReplayError(
                f"{where}: set_back must be a table of settings ({', '.join(SETTINGS)}), got {set_back!r}"
            )
        unknown = sorted(set(set_back) - set(SETTINGS))
        if unknown:
            raise ReplayError(f"{where}: set_back {unknown[0]!r} is not one of {', '.join(SETTINGS)}")
        for name, value in set_back.items():
            if not isinstance(value, str) or not value:
                raise ReplayError(f"{where}: set_back {name} must be a non-empty string, got {value!r}")
        last = raw.get("last_step", 0)
        if not isinstance(last, int) or isinstance(last, bool) or last < 0:
            raise ReplayError(f"{where}: last_step must be a whole number of steps, got {last!r}")
        runs.append(
            Replay(
                case=raw["case"],
                dtype=raw["dtype"],
                directory=Path(raw.get("directory") or path.parent),
                test=str(raw.get("test", "")),
                last_step=last,
                set_back={str(k): str(v) for k, v in set_back.items()},
            )
        )
    return ReplayPlan(runs)
