"""The anatomy's record: what each of a few training steps was made of, as exact digests.

The anatomy has three homes: this record (numpy only), its recorder on TensorFlow
(:mod:`.backend.anatomy`, which takes the steps apart) and its reader (:mod:`.gate.localise`,
which compares two records).

Per recorded step: the batch, every trainable weight before and after the step, the model's
output, the loss and every gradient the optimizer received. Digests (64-bit, of the values' bit
patterns: :mod:`.backend.digests`) compare exactly; the float64 sums beside them say by how much
two differ. Two versions' anatomies of the same case name the first stage that differs
(:mod:`.gate.localise`). Stored in results files (a few steps, on by default) as hex strings,
which JSON and JavaScript keep exact; a replay of a whole run stores them as ``.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_bytes

DEFAULT_STEPS = 0
"""Steps a results file records by default: none. Taking a run's steps apart builds and traces
its model again (a second or more a run, measured on the catalogue), and only the cases a gate
finds changed ever need it: the gate's replay round takes those apart on both sides
(:mod:`.gate.replay_rounds`). ``--convergence-anatomy=N`` records every run's first N steps, for
a plain ``compare`` that names mechanisms without replays."""
SUGGESTED_STEPS = 3
"""What to record where every run's first steps should travel in the results file: the first
difference of most upgrades (a loss dtype, an optimizer's formula, another batch, other initial
weights) shows in step 1 or 2."""

SCALARS = ("loss", "batch", "batch_set", "output", "output_set", "output_sum")
ROWS = ("weights_before", "gradients", "gradient_sums", "weights_after", "weight_sums")
DIGESTS = {"batch", "batch_set", "output", "output_set", "weights_before", "gradients", "weights_after"}
UNORDERED = {"batch_set": "batch", "output_set": "output"}
"""Digests of a batch's rows (and the output's) whatever their order, and their ordered digest:
a record without them (an earlier version) reads them as the ordered one."""


@dataclass
class Anatomy:
    """Steps ``first_step`` to ``first_step + len(loss) - 1`` (1-based) of one run, taken apart."""

    first_step: int
    weights: list[str]
    loss: np.ndarray
    batch: np.ndarray
    batch_set: np.ndarray
    """The batch's rows digested whatever their order (the same samples reordered digest the same)."""
    output: np.ndarray
    output_set: np.ndarray
    output_sum: np.ndarray
    weights_before: np.ndarray
    gradients: np.ndarray
    gradient_sums: np.ndarray
    weights_after: np.ndarray
    weight_sums: np.ndarray
    configuration: dict[str, str] = field(default_factory=dict)
    """What ran (output dtype, dtype policy, optimizer and loss classes, shuffling, XLA)."""
    layers: list[str] = field(default_factory=list)
    """The model's top-level layers in the order the forward pass ran them, ``name (Class)``."""
    layer_outputs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    """Per step and layer: the digest of the layer's output (empty: not recorded)."""
    layer_sets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    """The same, whatever the order of the batch's rows."""
    initial_weights: list[np.ndarray] = field(default_factory=list)
    """The initial weights' values (``model.get_weights()``), kept only for a replay."""
    matches_run: bool | None = None
    """Whether its losses are the run's, bit for bit (None: not checked)."""

    @property
    def steps(self) -> np.ndarray:
        return np.arange(self.first_step, self.first_step + len(self.loss))

    @property
    def last_step(self) -> int:
        return self.first_step + len(self.loss) - 1

    def check_against(self, run_loss: np.ndarray) -> bool:
        """Record and return whether this anatomy trained as the run did (same losses, bitwise)."""
        start = self.first_step - 1
        theirs = np.asarray(run_loss, np.float64)[start : start + len(self.loss)]
        self.matches_run = len(theirs) == len(self.loss) and bool(
            np.array_equal(theirs, np.asarray(self.loss, np.float64), equal_nan=True)
        )
        return self.matches_run

    def check_checkpoints(self, steps: list[int], losses: list[float]) -> bool | None:
        """Record whether its losses are a results file's at the checkpoints both hold (a replay
        that took apart the first steps without training the run); None: no step in common."""
        if self.matches_run is not None:
            return self.matches_run
        at = [(s, v) for s, v in zip(steps, losses) if self.first_step <= s <= self.last_step]
        if not at:
            return None
        mine = np.array([self.loss[s - self.first_step] for s, _ in at], np.float64)
        theirs = np.array([v for _, v in at], np.float64)
        self.matches_run = bool(np.array_equal(mine, theirs, equal_nan=True))
        return self.matches_run

    # ------------------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "first_step": self.first_step,
            "weights": list(self.weights),
            "configuration": dict(self.configuration),
            "matches_run": self.matches_run,
        }
        for name in (*SCALARS, *ROWS):
            values = np.asarray(getattr(self, name))
            document[name] = _hex(values) if name in DIGESTS else _floats(values)
        if self.layers and np.asarray(self.layer_outputs).shape == (len(self.loss), len(self.layers)):
            document["layers"] = list(self.layers)
            document["layer_outputs"] = _hex(np.asarray(self.layer_outputs))
            document["layer_sets"] = _hex(np.asarray(self.layer_sets))
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Anatomy:
        """Raises ``KeyError``/``ValueError``/``TypeError`` on a malformed record; the results
        file's loader (:func:`.gate.results.load`) turns them into its own error, naming the run."""
        count = len(document["weights"])
        steps = len(document["loss"])
        arrays: dict[str, np.ndarray] = {}
        for name in (*SCALARS, *ROWS):
            raw = document[UNORDERED[name]] if name in UNORDERED and name not in document else document[name]
            if name in DIGESTS:
                values = np.array(
                    [[_int(v) for v in row] for row in raw] if name in ROWS else [_int(v) for v in raw],
                    dtype=np.int64,
                )
            else:
                values = np.array(raw, dtype=np.float64)
            if name in ROWS:
                if values.size == 0:
                    values = values.reshape(steps, count)
                if values.shape != (steps, count):
                    raise ValueError(
                        f"{name}: {values.shape} values, {steps} steps of {count} weights expected"
                    )
            elif values.shape != (steps,):
                raise ValueError(f"{name}: {values.shape} values, one for each of {steps} steps expected")
            arrays[name] = values
        anatomy = cls.from_arrays(
            first_step=int(document["first_step"]),
            weights=[str(w) for w in document["weights"]],
            configuration={str(k): str(v) for k, v in document.get("configuration", {}).items()},
            matches_run=document.get("matches_run"),
            arrays=arrays,
        )
        if document.get("layers"):
            layers = [str(name) for name in document["layers"]]
            for name in ("layer_outputs", "layer_sets"):
                values = np.array([[_int(v) for v in row] for row in document[name]], dtype=np.int64)
                if values.shape != (steps, len(layers)):
                    raise ValueError(
                        f"{name}: {values.shape} values, {steps} steps of {len(layers)} layers expected"
                    )
                setattr(anatomy, name, values)
            anatomy.layers = layers
        return anatomy

    # ------------------------------------------------------------------------------ npz
    def save(self, path: Path) -> None:
        """A whole run's anatomy (a replay): binary, written atomically."""
        import io
        import json

        buffer = io.BytesIO()
        extra = {f"initial_{i}": w for i, w in enumerate(self.initial_weights)}
        meta = json.dumps(
            {
                "first_step": self.first_step,
                "weights": self.weights,
                "configuration": self.configuration,
                "matches_run": self.matches_run,
                "initial_count": len(self.initial_weights),
                "layers": self.layers,
            }
        )
        arrays: dict[str, Any] = {name: np.asarray(getattr(self, name)) for name in (*SCALARS, *ROWS)}
        arrays.update(extra, meta=np.array(meta))
        arrays.update(layer_outputs=np.asarray(self.layer_outputs), layer_sets=np.asarray(self.layer_sets))
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Anatomy:
        import json

        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {
                name: np.array(data[name if name in data.files else UNORDERED[name]])
                for name in (*SCALARS, *ROWS)
            }
            initial = [np.array(data[f"initial_{i}"]) for i in range(meta["initial_count"])]
            by_layer = {
                name: np.array(data[name]) for name in ("layer_outputs", "layer_sets") if name in data.files
            }
        anatomy = cls.from_arrays(
            first_step=meta["first_step"],
            weights=meta["weights"],
            configuration=meta["configuration"],
            matches_run=meta["matches_run"],
            arrays=arrays,
            initial_weights=initial,
        )
        if meta.get("layers") and len(by_layer) == 2:
            anatomy.layers = list(meta["layers"])
            anatomy.layer_outputs, anatomy.layer_sets = by_layer["layer_outputs"], by_layer["layer_sets"]
        return anatomy

    @classmethod
    def from_arrays(
        cls,
        *,
        first_step: int,
        weights: list[str],
        configuration: dict[str, str],
        matches_run: bool | None,
        arrays: dict[str, np.ndarray],
        initial_weights: list[np.ndarray] | None = None,
    ) -> Anatomy:
        return cls(
            first_step=first_step,
            weights=weights,
            loss=arrays["loss"],
            batch=arrays["batch"],
            batch_set=arrays["batch_set"],
            output=arrays["output"],
            output_set=arrays["output_set"],
            output_sum=arrays["output_sum"],
            weights_before=arrays["weights_before"],
            gradients=arrays["gradients"],
            gradient_sums=arrays["gradient_sums"],
            weights_after=arrays["weights_after"],
            weight_sums=arrays["weight_sums"],
            configuration=configuration,
            initial_weights=initial_weights or [],
            matches_run=matches_run,
        )


def _hex(values: np.ndarray) -> Any:
    if values.ndim == 2:
        return [[_one_hex(v) for v in row] for row in values]
    return [_one_hex(v) for v in values]


def _one_hex(value: Any) -> str:
    return f"{int(value) & 0xFFFFFFFFFFFFFFFF:016x}"


def _int(text: str) -> int:
    value = int(str(text), 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def _floats(values: np.ndarray) -> Any:
    return [[_float(v) for v in row] for row in values] if values.ndim == 2 else [_float(v) for v in values]


def _float(value: Any) -> float | str:
    number = float(value)
    if np.isnan(number):
        return "nan"
    if np.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number
