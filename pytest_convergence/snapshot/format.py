"""A run as a snapshot stores it: a readable text with a header and a compared body.

The header (case, dtype, engine, versions, platform, tolerance) is shown for review and never
compared: a snapshot made on TensorFlow 2.19 is still valid on 2.21 if the history agrees. The
body is what is compared: the outcome and its event steps, the final loss, the final weights and
the loss at checkpoints (every step for the first 50, then about 150 log-spaced steps, and the last
one), each number printed with the digits its dtype holds, so a bit-identical rerun prints the
same text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SnapshotFormatError

if TYPE_CHECKING:
    from ..run import Run
    from ..tolerance import Tolerance

FORMAT_VERSION = 1
MAGIC = "pytest-convergence snapshot"
DENSE_STEPS = 50
LOG_POINTS = 150
FULL_TENSOR_LIMIT = 32
"""Tensors with more elements are summarised (norm, mean, min, max) to stay reviewable."""

EVENT_KEYS = (
    "first_nonfinite_step",
    "first_zero_step",
    "stall_step",
    "cycle_start_step",
    "period",
    "stopped_epoch",  # a callback's early stop and restored weights (epochs): only runs with callbacks
    "restored_epoch",
)


def checkpoint_steps(steps: int) -> np.ndarray:
    """1-based steps to record: dense at the start, log-spaced after, always the last step."""
    dense = np.arange(1, min(steps, DENSE_STEPS) + 1)
    if steps <= DENSE_STEPS:
        return dense
    spaced = np.unique(np.round(np.geomspace(DENSE_STEPS, steps, LOG_POINTS)).astype(np.int64))
    return np.unique(np.concatenate([dense, spaced, [steps]]))


@dataclass
class Trajectory:
    """The content of one snapshot; ``header`` is shown, everything else is compared."""

    header: dict[str, str]
    outcome: str
    events: dict[str, int]
    final_loss: float
    weights: dict[str, tuple[str, np.ndarray]]
    """name -> (what the numbers are: 'values' or 'summary', the numbers)"""
    steps: np.ndarray
    losses: np.ndarray
    loss_dtype: str = "float32"
    weight_dtype: str = "float32"
    borderline: tuple[str, ...] = ()
    """The outcomes across a borderline decision (:mod:`..diagnosis.margins`): another machine's
    run may end in any of them, and a comparison accepts it."""
    compared_text: str = field(default="", compare=False)

    @property
    def outcomes(self) -> set[str]:
        """Every outcome this snapshot accepts: its own and its borderline alternatives."""
        return {self.outcome, *self.borderline}

    @property
    def total_steps(self) -> int:
        return int(self.steps[-1]) if self.steps.size else 0

    @property
    def tolerance(self) -> Tolerance | None:
        from ..tolerance import Tolerance

        text = self.header.get("tolerance")
        return Tolerance.from_text(text) if text else None

    @property
    def calibrated(self) -> Tolerance | None:
        """The tolerance calibration measured for this run, carried in the header; None if never."""
        from ..tolerance import Tolerance

        text = self.header.get("calibrated")
        return Tolerance.from_text(text) if text else None

    @property
    def effective_tolerance(self) -> Tolerance:
        """The configured tolerance widened by the calibrated one: what a comparison applies."""
        configured = self.tolerance
        assert configured is not None, "a rendered run always carries its tolerance"
        return configured.widened(self.calibrated)

    @classmethod
    def from_run(cls, run: Run, tolerance: Tolerance, test: str = "") -> Trajectory:
        diagnosis, history = run.diagnosis, run.history
        events = {k: int(v) for k, v in diagnosis.evidence.items() if k in EVENT_KEYS and v is not None}
        if history.target_loss is not None:
            reached = history.steps_to_target
            events["steps_to_target"] = -1 if reached is None else reached
        steps = checkpoint_steps(history.steps)
        versions = run.versions
        header = {
            "case": run.case,
            "dtype": run.dtype,
            "engine": run.engine,
            "steps": str(history.steps),
            "seed": str(run.seed),
            "optimizer": history.optimizer,
            **({"optimizer ran": run.optimizer_ran} if run.optimizer_ran else {}),
            **({"loss ran": run.loss_ran} if run.loss_ran else {}),
            "loss dtype": history.loss_dtype,
            "weights dtype": history.variable_dtype,
            **({"dtype mismatch": history.dtype_mismatch} if history.dtype_mismatch else {}),
            **({"callbacks": ", ".join(history.callbacks)} if history.callbacks else {}),
            "final loss of": "the last epoch (History's mean of its batches)"
            if history.judged_on_epochs
            else "the last step",
            "versions": ", ".join(
                f"{name} {versions[name]}"
                for name in ("python", "numpy", "tensorflow", "keras")
                if name in versions
            ),
            **({"keras": _keras_line(versions)} if versions.get("keras_major") else {}),
            "platform": versions.get("platform", ""),
            **({"machine": versions["machine"]} if "machine" in versions else {}),
            **({"fingerprint": versions["fingerprint"]} if "fingerprint" in versions else {}),
            "tolerance": tolerance.to_text(),
            **({"calibrated": run.calibrated_tolerance} if run.calibrated_tolerance else {}),
        }
        if test:
            header = {"test": test, **header}
        weights: dict[str, tuple[str, np.ndarray]] = {}
        for name, values in history.final_weights.items():
            flat = np.asarray(values).astype(np.float64).reshape(-1)
            if flat.size <= FULL_TENSOR_LIMIT:
                weights[f"{name} {tuple(np.shape(values))}"] = ("values", flat)
            else:
                finite = flat[np.isfinite(flat)]
                summary = np.array(
                    [
                        float(np.linalg.norm(flat)),
                        float(np.mean(flat)),
                        float(np.min(finite)) if finite.size else math.nan,
                        float(np.max(finite)) if finite.size else math.nan,
                    ]
                )
                weights[f"{name} {tuple(np.shape(values))}"] = ("norm mean min max", summary)
        return cls(
            header=header,
            outcome=diagnosis.outcome.value,
            borderline=tuple(o.value for o in diagnosis.outcomes[1:]),
            events=events,
            final_loss=history.final_loss,
            weights=weights,
            steps=steps,
            losses=history.loss[steps - 1],
            loss_dtype=history.loss_dtype,
            weight_dtype=history.variable_dtype,
        )

    # --------------------------------------------------------------------------- writing
    def render(self) -> str:
        lines = [f"{MAGIC} v{FORMAT_VERSION}", "# shown for review, not compared:"]
        lines += [f"{key}: {value or '(unknown)'}" for key, value in self.header.items()]
        lines.append("# compared (with the tolerance above; pytest --snapshot-update accepts a change):")
        lines += self._body_lines()
        lines.append("end")
        return "\n".join(lines) + "\n"

    def _body_lines(self) -> list[str]:
        lines = [
            f"outcome: {self.outcome}"
            + (f" (borderline: {', '.join(self.borderline)})" if self.borderline else "")
        ]
        lines += [f"event {key}: {value}" for key, value in sorted(self.events.items())]
        lines.append(f"final loss: {format_number(self.final_loss, self.loss_dtype)}")
        for name, (kind, values) in self.weights.items():
            dtype = self.weight_dtype if kind == "values" else "float64"
            numbers = " ".join(format_number(v, dtype) for v in values)
            lines.append(f"weight {name} {kind}: {numbers}")
        lines.append(f"loss at {self.steps.size} checkpoints (step loss):")
        lines += [f"{int(s)} {format_number(v, self.loss_dtype)}" for s, v in zip(self.steps, self.losses)]
        return lines

    def body_text(self) -> str:
        return "\n".join(self._body_lines())

    # --------------------------------------------------------------------------- reading
    @classmethod
    def parse(cls, text: str) -> Trajectory:
        """Read a snapshot text, saying precisely what is wrong if it cannot be read."""
        lines = text.splitlines()
        if not lines or not lines[0].startswith(MAGIC):
            first = lines[0][:60] if lines else "(empty file)"
            raise SnapshotFormatError(f"not a pytest-convergence snapshot: the first line is {first!r}")
        version_text = lines[0][len(MAGIC) :].strip().lstrip("v")
        if version_text != str(FORMAT_VERSION):
            raise SnapshotFormatError(
                f"snapshot format v{version_text} is not the v{FORMAT_VERSION} this version of "
                "pytest-convergence reads"
            )
        if lines[-1].strip() != "end":
            raise SnapshotFormatError("the snapshot is truncated: its last line is not 'end'")
        header: dict[str, str] = {}
        index = 1
        while index < len(lines) - 1 and not lines[index].startswith("# compared"):
            line = lines[index]
            if not line.startswith("#"):
                key, sep, value = line.partition(":")
                value = value.strip()
                if not sep:
                    raise SnapshotFormatError(
                        f"line {index + 1}: expected 'key: value' in the header, got {line!r}"
                    )
                header[key] = value
            index += 1
        if index == len(lines) - 1:
            raise SnapshotFormatError("no '# compared' section")
        body = lines[index + 1 : -1]
        return cls._parse_body(header, body, first_line=index + 2)

    @classmethod
    def _parse_body(cls, header: dict[str, str], body: list[str], first_line: int) -> Trajectory:
        loss_dtype = header.get("loss dtype", "float32")
        weight_dtype = header.get("weights dtype", "float32")
        outcome = ""
        borderline: tuple[str, ...] = ()
        events: dict[str, int] = {}
        final_loss = math.nan
        weights: dict[str, tuple[str, np.ndarray]] = {}
        steps: list[int] = []
        losses: list[float] = []
        expected_points = -1
        in_checkpoints = False
        for offset, line in enumerate(body):
            where = f"line {first_line + offset}"
            try:
                if in_checkpoints:
                    step_text, value_text = line.split()
                    steps.append(int(step_text))
                    losses.append(float(value_text))
                elif line.startswith("outcome: "):
                    outcome, _, near = line.removeprefix("outcome: ").strip().partition(" (borderline: ")
                    if near and not near.endswith(")"):
                        raise ValueError("unclosed parenthesis")
                    borderline = tuple(o.strip() for o in near.removesuffix(")").split(",") if o.strip())
                elif line.startswith("event "):
                    key, _, value = line.removeprefix("event ").partition(": ")
                    events[key] = int(value)
                elif line.startswith("final loss: "):
                    final_loss = float(line.removeprefix("final loss: "))
                elif line.startswith("weight "):
                    head, _, numbers = line.removeprefix("weight ").partition(": ")
                    kind = "norm mean min max" if head.endswith(" norm mean min max") else "values"
                    name = head.removesuffix(" " + kind)
                    weights[name] = (kind, np.array([float(v) for v in numbers.split()], np.float64))
                elif line.startswith("loss at ") and line.endswith("checkpoints (step loss):"):
                    expected_points = int(line.split()[2])
                    in_checkpoints = True
                else:
                    raise ValueError("unexpected line")
            except ValueError:
                raise SnapshotFormatError(f"{where}: cannot read {line[:80]!r}") from None
        if not outcome:
            raise SnapshotFormatError("the compared section has no 'outcome:' line")
        if expected_points != len(steps):
            raise SnapshotFormatError(
                f"expected {expected_points} checkpoints, found {len(steps)}: the file was cut or edited"
            )
        trajectory = cls(
            header=header,
            outcome=outcome,
            borderline=borderline,
            events=events,
            final_loss=final_loss,
            weights=weights,
            steps=np.array(steps, np.int64),
            losses=np.array(losses, np.float64),
            loss_dtype=loss_dtype,
            weight_dtype=weight_dtype,
        )
        trajectory.compared_text = "\n".join(body)
        return trajectory


def format_number(value: float, dtype: str) -> str:
    """The shortest text that reads back as the same number in ``dtype``."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if dtype == "bfloat16":
        return f"{value:.4g}"  # 8 significant bits: 4 digits always read back the same bfloat16
    numpy_dtype = np.dtype(dtype) if dtype in ("float16", "float32", "float64") else np.dtype(np.float64)
    typed = numpy_dtype.type(value)
    text = np.format_float_positional(typed, unique=True, trim="-")
    scientific = np.format_float_scientific(typed, unique=True, trim="-")
    return text if len(text) <= len(scientific) else scientific


def parse_versions(text: str) -> dict[str, str]:
    """The header's ``versions`` line read back: ``python 3.11.7, numpy 2.4.6`` -> name -> version."""
    versions: dict[str, str] = {}
    for item in text.split(","):
        name, _, version = item.strip().partition(" ")
        if name:
            versions[name] = version.strip()
    return versions


def render_run(run: Run, tolerance: Tolerance, test: str = "") -> str:
    return Trajectory.from_run(run, tolerance, test).render()


def _keras_line(versions: Mapping[str, str]) -> str:
    """Which Keras ran, in words: the same version number can be Keras 2 (tf_keras) or Keras 3."""
    major = versions["keras_major"]
    package = versions.get("keras_package", "keras")
    backend = versions.get("keras_backend", "?")
    return f"Keras {major} ({package} {versions.get('keras', '?')}, {backend} backend)"
