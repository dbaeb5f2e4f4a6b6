"""The shared factories of the test suite, in one module: small real cases (tens to hundreds of
steps), spec-file text, and what each Keras does. Imported as ``from factories import ...``
(pyproject puts tests/ on the path)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_convergence import Case
from pytest_convergence.backend.keras_adapter import installed_major

KERAS_MAJOR = installed_major()
"""2 or 3, known without importing TensorFlow, so tests can state what each Keras does."""

keras3_dynamics = pytest.mark.skipif(
    KERAS_MAJOR != 3,
    reason="asserts a training trajectory of Keras 3, whose float16 losses are computed in float32 "
    "and whose RMSprop is written differently; Keras 2 trains this case to another outcome "
    "(see test_keras2.py for what it does there)",
)

BCE_LOGITS = {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}
SEED_X = [[-1.0], [1.0]]
SEED_Y = [1.0, 0.0]


def seed_case(name: str = "seed", **changes: Any) -> Case:
    """The user's seed model (one Dense unit, two samples), shortened for tests."""
    settings: dict[str, Any] = {
        "layers": [{"class_name": "Dense", "config": {"units": 1}}],
        "input_shape": (1,),
        "x": SEED_X,
        "y": SEED_Y,
        "loss": BCE_LOGITS,
        "optimizer": {"class_name": "RMSprop", "config": {"learning_rate": 2.55}},
        "steps": 300,
        "seed": 0,
    }
    settings.update(changes)
    return Case.sequential(name, **settings)


HIDDEN_RELU6 = [
    {"class_name": "Dense", "config": {"units": 6, "activation": "relu"}},
    {"class_name": "Dense", "config": {"units": 1}},
]


SEED_SPEC_BODY = """
[model]
input_shape = [1]
layers = [{ class_name = "Dense", config = { units = 1 } }]

[loss]
class_name = "BinaryCrossentropy"
config = { from_logits = true }

[optimizer]
class_name = "RMSprop"
config = { learning_rate = 2.55 }

[data]
x = [[-1.0], [1.0]]
y = [1.0, 0.0]
"""


def seed_spec(header: str, footer: str = "") -> str:
    """A spec file of the seed model: ``header`` (name, dtypes, steps...) + model, data + ``footer``."""
    return header.rstrip("\n") + "\n" + SEED_SPEC_BODY + footer


HEAVY_MODULES_CONFTEST = """
import sys
def pytest_sessionfinish(session):
    loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
    print("HEAVY-MODULES:", loaded or "none")
"""
