"""Another machine's rounding, simulated on this one: weights moved by one unit in the last place.

Measured on the catalogue (docs/machine-settings.md): the same TensorFlow wheel on an Intel CPU
with AVX-512 and an AMD EPYC with AVX2 gave float32, bfloat16 and mixed_float16 histories that part
in the last place, first at step 1 to 16 (one run at step 525), and then differ at 15% to 100% of
the checkpoints: another machine's kernels round differently at many steps, not once. A
perturbation therefore moves every trainable weight by one ulp, in a random direction per
weight, before the first step and again at a few steps spread log-uniformly over the run (about
one per doubling of the step count), since an early nudge is amplified the most and a late one
moves the events (a cycle's start) that an early one cannot reach. A weight at exactly zero
stays there: its neighbour is a subnormal, which TensorFlow flushes to zero on CPUs.

Calibration (``--convergence-calibrate``) and the foreign-machine simulation
(``--convergence-simulate-machine``) use this one model with separate random streams, so the
tolerance calibrated from the first is tested, not repeated, by the second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .numerics import spacing as _spacing

STREAMS = {"calibrate": 1, "simulate": 2}
PRECISION_BITS = {"bfloat16": 8, "float16": 11, "float32": 24, "float64": 53}


@dataclass(frozen=True)
class Perturbation:
    """One simulated machine: ``seed`` picks the nudge steps and every weight's direction."""

    seed: int
    stream: str = "simulate"

    def rng(self, case_seed: int, step: int) -> np.random.Generator:
        """The directions of the nudge at ``step`` (-1: the choice of steps); numpy's seeds are >= 0."""
        return np.random.default_rng([STREAMS[self.stream], abs(case_seed), abs(self.seed), step + 1])

    def steps(self, case_seed: int, total_steps: int) -> list[int]:
        """0 (before the first step) and about log2(total) later steps, log-uniform over the run."""
        if total_steps <= 1:
            return [0]
        count = max(1, int(math.log2(total_steps)))
        rng = self.rng(case_seed, -1)
        later = np.exp(rng.uniform(0.0, math.log(total_steps), size=count)).astype(np.int64)
        return sorted({0, *(int(s) for s in later if 0 < s < total_steps)})

    def describe(self) -> str:
        return f"{self.stream} seed {self.seed}"


def nudge_dtype(variable_dtype: str, compute_dtype: str, loss_dtype: str) -> str:
    """The coarsest dtype the run's arithmetic passes through, whose ulp is the size of the rounding
    another kernel changes.

    Usually the variables' dtype; but Keras 3 computes a float64 model's loss in float32, and a
    mixed_float16 model computes in float16: there another kernel's rounding is a float32 (float16)
    ulp, and nudging by a float64 (float32) ulp would recommend a tolerance that the real change
    exceeds (measured: spirals in float64, TensorFlow 2.19 -> 2.21).
    """
    used = [d for d in (variable_dtype, compute_dtype, loss_dtype) if d in PRECISION_BITS]
    return min(used, key=PRECISION_BITS.__getitem__, default=variable_dtype)


def one_ulp_away(weights: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """``weights`` (float64 values) each moved one unit in the last place of ``dtype``, up or down."""
    direction = rng.choice([-1.0, 1.0], size=np.shape(weights))
    values = np.asarray(weights, np.float64)
    if dtype in ("float16", "float32", "float64"):
        typed = values.astype(dtype)
        if np.array_equal(typed.astype(np.float64), values, equal_nan=True):
            return np.nextafter(typed, (direction * np.inf).astype(dtype)).astype(np.float64)
    # bfloat16 has no numpy type; a coarser dtype than the weights' moves them by its spacing
    return values + direction * _spacing(values, dtype)
