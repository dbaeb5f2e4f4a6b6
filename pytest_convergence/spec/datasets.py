"""Small built-in data sets, so a spec file can say ``data = { generator = "two_moons" }``.

These are the classic toy problems a convergence test wants: tiny, with a known difficulty
(XOR, moons, circles and spirals are not linearly separable; far blobs are; a linear regression
has a known noise floor). They are pure numpy, so a spec file is validated and its data built
without TensorFlow, and each is a function of its parameters and seed alone (its own
``numpy.random.default_rng(seed)``, never the global state), so a snapshot of a loss history
stays reproducible.

Every generator draws its standard-normal noise once and scales it by ``noise``: for one seed,
raising the noise moves the same points further rather than drawing a different data set. The
classes are shuffled together (xor aside, see :func:`xor`), so a case trained with
``shuffle = false`` still sees every class in every batch.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CaseError

Data = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Parameter:
    """How one generator parameter is checked and published; the default is the function's own."""

    kind: type  # int, float or tuple (a shape): TOML gives integers for ``200``, floats for ``0.1``
    description: str
    minimum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    multiple_of: int | None = None
    why: str = ""
    """Why the bound holds, appended to the error so the user learns more than the number."""

    def schema(self, default: Any) -> dict[str, Any]:
        """This parameter in JSON Schema words, so the published schema needs no translation."""
        if self.kind is tuple:
            return {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 1,
                "default": list(default),
                "description": self.description,
            }
        entry: dict[str, Any] = {
            "type": "integer" if self.kind is int else "number",
            "default": default,
            "description": self.description,
        }
        for key, value in (
            ("minimum", self.minimum),
            ("exclusiveMinimum", self.exclusive_minimum),
            ("exclusiveMaximum", self.exclusive_maximum),
            ("multipleOf", self.multiple_of),
        ):
            if value is not None:
                entry[key] = value
        return entry

    def check(self, value: Any, field: str) -> Any:
        """The value as a Python int, float or shape tuple, or a CaseError saying what was expected."""
        if self.kind is tuple:
            return _shape(value, field)
        kind = "an integer" if self.kind is int else "a number"
        numeric = (int, np.integer) if self.kind is int else (int, float, np.integer, np.floating)
        if not isinstance(value, numeric) or isinstance(value, (bool, np.bool_)):
            raise CaseError(f"must be {kind}, got {value!r}", field=field, fix=self._fix(value))
        value = self.kind(value)
        if not math.isfinite(value):
            raise CaseError(f"must be a finite number, got {value!r}", field=field)
        why = f" ({self.why})" if self.why else ""
        if self.minimum is not None and value < self.minimum:
            raise CaseError(f"must be {kind} >= {self.minimum}{why}, got {value!r}", field=field)
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            raise CaseError(f"must be {kind} > {self.exclusive_minimum}{why}, got {value!r}", field=field)
        if self.exclusive_maximum is not None and value >= self.exclusive_maximum:
            raise CaseError(f"must be {kind} < {self.exclusive_maximum}{why}, got {value!r}", field=field)
        if self.multiple_of is not None and value % self.multiple_of:
            below = value - value % self.multiple_of
            nearest = [n for n in (below, below + self.multiple_of) if n > 0]
            raise CaseError(
                f"must be a multiple of {self.multiple_of}{why}, got {value!r}",
                field=field,
                fix="use " + " or ".join(str(n) for n in nearest),
            )
        return value

    def _fix(self, value: Any) -> str | None:
        """The two slips TOML invites: ``samples = 200.0`` and ``noise = "0.1"``."""
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return None
            if math.isfinite(number) and (self.kind is float or number.is_integer()):
                return f"write {value.strip()} without the quotes"
        if self.kind is int and isinstance(value, (float, np.floating)) and float(value).is_integer():
            return f"write {int(value)} without the decimal point"
        return None


def _shape(value: Any, field: str) -> tuple[int, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) > 0
    ok = ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise CaseError(
            f"must be a shape: a non-empty list of positive integers, got {value!r}",
            field=field,
            fix="e.g. [10] for vectors, [4, 10] for 4 time steps of 10 features, [10, 10, 3] for images",
        )
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class _Generator:
    function: Callable[..., Data]
    description: str
    parameters: dict[str, Parameter]
    defaults: dict[str, Any]
    check: Callable[[dict[str, Any], str], None] | None = None
    """A check across parameters, run once each is valid on its own."""


_REGISTRY: dict[str, _Generator] = {}


def _seed() -> Parameter:
    return Parameter(int, "Seed of numpy.random.default_rng; the data is a function of it.", minimum=0)


def _noise(description: str) -> Parameter:
    return Parameter(float, description, minimum=0)


def _two_class_samples() -> Parameter:
    return Parameter(
        int, "Number of points, split evenly between the two classes.", minimum=2, why="one per class"
    )


def _register(
    name: str, check: Callable[[dict[str, Any], str], None] | None = None, **parameters: Parameter
) -> Callable[[Callable[..., Data]], Callable[..., Data]]:
    """Record a generator with its parameter checks; its signature is the one source of defaults."""

    def register(function: Callable[..., Data]) -> Callable[..., Data]:
        signature = inspect.signature(function).parameters
        defaults = {key: p.default for key, p in signature.items()}
        assert list(defaults) == list(parameters), f"{name}: parameters and signature disagree"
        description = (function.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = _Generator(function, description, parameters, defaults, check)
        return function

    return register


def _split(samples: int, parts: int) -> np.ndarray:
    """Sizes of ``parts`` classes as equal as they can be, the first ones larger by one."""
    return np.array([samples // parts + (index < samples % parts) for index in range(parts)])


def _finish(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, noise: float, *, shuffle: bool = True
) -> Data:
    """Add the scaled noise, shuffle, and hand back float32 as Keras trains on by default."""
    x = x + noise * rng.standard_normal(x.shape)
    if shuffle:
        order = rng.permutation(len(x))
        x, y = x[order], y[order]
    return x.astype(np.float32), y.astype(np.float32)


@_register(
    "xor",
    samples=Parameter(
        int,
        "Number of points: the 4 XOR points, each repeated samples / 4 times.",
        minimum=4,
        multiple_of=4,
        why="each of the 4 XOR points repeated equally",
    ),
    noise=_noise("Standard deviation of Gaussian noise added to the points."),
    seed=_seed(),
)
def xor(*, samples: int = 4, noise: float = 0.0, seed: int = 0) -> Data:
    """The XOR problem: (0, 0) and (1, 1) are class 0, (0, 1) and (1, 0) class 1.

    Not shuffled: the points repeat in order, so any 4 consecutive ones hold each point once and a
    batch of a multiple of 4 is balanced even unshuffled, and the default 4 points read as the
    textbook table.
    """
    points = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0.0, 1.0, 1.0, 0.0])
    repeats = samples // 4
    rng = np.random.default_rng(seed)
    return _finish(rng, np.tile(points, (repeats, 1)), np.tile(labels, repeats), noise, shuffle=False)


@_register(
    "two_moons",
    samples=_two_class_samples(),
    noise=_noise("Standard deviation of Gaussian noise added to the points."),
    seed=_seed(),
)
def two_moons(*, samples: int = 100, noise: float = 0.1, seed: int = 0) -> Data:
    """Two interleaving half circles (class 0 the upper, class 1 the lower), as scikit-learn draws them."""
    outer, inner = _split(samples, 2)
    t_outer = np.linspace(0.0, np.pi, outer)
    t_inner = np.linspace(0.0, np.pi, inner)
    x = np.concatenate(
        [
            np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1),
            np.stack([1.0 - np.cos(t_inner), 0.5 - np.sin(t_inner)], axis=1),
        ]
    )
    y = np.repeat([0.0, 1.0], [outer, inner])
    return _finish(np.random.default_rng(seed), x, y, noise)


@_register(
    "circles",
    samples=_two_class_samples(),
    noise=_noise("Standard deviation of Gaussian noise added to the points."),
    factor=Parameter(
        float,
        "Radius of the inner circle, the outer one being 1.",
        exclusive_minimum=0,
        exclusive_maximum=1,
        why="the inner circle lies strictly inside the outer one",
    ),
    seed=_seed(),
)
def circles(*, samples: int = 100, noise: float = 0.05, factor: float = 0.5, seed: int = 0) -> Data:
    """Two concentric circles: class 0 the outer (radius 1), class 1 the inner (radius factor)."""
    outer, inner = _split(samples, 2)
    t_outer = np.linspace(0.0, 2.0 * np.pi, outer, endpoint=False)
    t_inner = np.linspace(0.0, 2.0 * np.pi, inner, endpoint=False)
    x = np.concatenate(
        [
            np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1),
            factor * np.stack([np.cos(t_inner), np.sin(t_inner)], axis=1),
        ]
    )
    y = np.repeat([0.0, 1.0], [outer, inner])
    return _finish(np.random.default_rng(seed), x, y, noise)


@_register(
    "spirals",
    samples=_two_class_samples(),
    noise=_noise("Standard deviation of Gaussian noise added to the points."),
    turns=Parameter(float, "How many times each spiral winds around the centre.", exclusive_minimum=0),
    seed=_seed(),
)
def spirals(*, samples: int = 100, noise: float = 0.05, turns: float = 1.5, seed: int = 0) -> Data:
    """Two interleaved spirals, class 1 being class 0 turned half a turn; harder with more turns.

    The radius grows from 0.1 to 1 rather than from 0, so the two spirals never share a point at
    the centre, where no model could tell them apart.
    """
    counts = _split(samples, 2)
    arms = []
    for label, count in enumerate(counts):
        s = np.linspace(0.0, 1.0, count)
        angle = 2.0 * np.pi * turns * s + np.pi * label
        radius = 0.1 + 0.9 * s
        arms.append(radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1))
    x = np.concatenate(arms)
    y = np.repeat([0.0, 1.0], counts)
    return _finish(np.random.default_rng(seed), x, y, noise)


def _check_blobs(values: dict[str, Any], where: str) -> None:
    if values["samples"] < values["centers"]:
        raise CaseError(
            f"must be at least centers ({values['centers']}) so that every blob has a point, "
            f"got {values['samples']}",
            field=f"{where}.samples",
        )


@_register(
    "blobs",
    check=_check_blobs,
    samples=Parameter(int, "Number of points, split evenly between the blobs.", minimum=1),
    centers=Parameter(int, "Number of blobs, which are the classes 0 .. centers - 1.", minimum=2),
    features=Parameter(int, "Number of input features (dimensions).", minimum=1),
    spread=Parameter(
        float,
        "Distance of the centres from the origin, evenly around a circle (along a line for 1 feature).",
        exclusive_minimum=0,
        why="blobs at one centre cannot be told apart",
    ),
    noise=_noise("Standard deviation of each blob."),
    seed=_seed(),
)
def blobs(
    *,
    samples: int = 100,
    centers: int = 2,
    features: int = 2,
    spread: float = 5.0,
    noise: float = 1.0,
    seed: int = 0,
) -> Data:
    """Gaussian blobs, one per class, their centres evenly around a circle of radius spread.

    The centres are placed, not drawn, so the difficulty is the same for every seed: neighbouring
    centres are 2·spread·sin(π/centers) apart (2·spread/(centers - 1) along the line of a single
    feature), and the blobs are linearly separable while that is several times the noise. The seed
    turns the circle to a random plane of the feature space and draws the points.
    """
    rng = np.random.default_rng(seed)
    if features == 1:
        centres = np.linspace(-spread, spread, centers)[:, None]
    else:
        angles = 2.0 * np.pi * np.arange(centers) / centers
        circle = spread * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        plane, _ = np.linalg.qr(rng.standard_normal((features, 2)))
        centres = circle @ plane.T
    labels = np.repeat(np.arange(centers), _split(samples, centers))
    return _finish(rng, centres[labels], labels, noise)


@_register(
    "linear_regression",
    samples=Parameter(int, "Number of points.", minimum=1),
    features=Parameter(int, "Number of input features.", minimum=1),
    noise=_noise("Standard deviation of Gaussian noise added to the targets: the best reachable RMSE."),
    seed=_seed(),
)
def linear_regression(*, samples: int = 100, features: int = 1, noise: float = 0.1, seed: int = 0) -> Data:
    """Targets y = x·w + b + noise, x standard normal, the true w and b standard normal from the seed.

    The weights are drawn before the points, so for one seed they are the same whatever the
    number of samples: a larger data set is more of the same problem. A model can get the mean
    squared error down to noise² and no further.
    """
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(features)
    bias = rng.standard_normal()
    x = rng.standard_normal((samples, features))
    y = x @ weights + bias + noise * rng.standard_normal(samples)
    return x.astype(np.float32), y.astype(np.float32)


@_register(
    "class_templates",
    samples=Parameter(int, "Number of samples.", minimum=2),
    classes=Parameter(int, "Number of classes.", minimum=2),
    shape=Parameter(
        tuple, "Shape of one sample: [features], [steps, features] or [height, width, channels]."
    ),
    noise=_noise("Standard deviation of the Gaussian noise added to each class's template."),
    one_hot=Parameter(
        int, "1: y one-hot, for categorical_crossentropy; 0: y class indices.", minimum=0, exclusive_maximum=2
    ),
    seed=_seed(),
)
def class_templates(
    *,
    samples: int = 100,
    classes: int = 2,
    shape: tuple[int, ...] = (10,),
    noise: float = 1.0,
    one_hot: int = 1,
    seed: int = 0,
) -> Data:
    """One random template per class, each sample its class's template plus noise (tf-keras's test data).

    The recipe of the tf-keras integration tests' data (templates uniform in [0, 2·classes),
    unit-normal noise, random labels), drawn from this generator's own seed: vector, time-series
    and image classification problems of any shape that a small model learns in a few epochs.
    """
    rng = np.random.default_rng(seed)
    templates = 2 * classes * rng.random((classes, *shape))
    labels = rng.integers(0, classes, size=samples)
    x = templates[labels] + noise * rng.standard_normal((samples, *shape))
    y = np.eye(classes)[labels] if one_hot else labels
    return x.astype(np.float32), y.astype(np.float32)


@_register(
    "token_labels",
    samples=Parameter(int, "Number of sequences.", minimum=1),
    length=Parameter(int, "Length of every sequence, padded with token 0 after its end.", minimum=4),
    vocabulary=Parameter(int, "Tokens are 1 .. vocabulary - 1 (0 is padding).", minimum=2),
    classes=Parameter(int, "Each token's label is its token number modulo classes.", minimum=2),
    seed=_seed(),
)
def token_labels(
    *, samples: int = 100, length: int = 16, vocabulary: int = 16, classes: int = 3, seed: int = 0
) -> Data:
    """Token classification: sequences of 4 to length tokens, padded with 0, one label per token.

    Like the tf-keras token-classification test (variable lengths, per-token labels, padding 0),
    with labels a model can learn (token modulo classes; padding is class 0) instead of random ones.
    """
    rng = np.random.default_rng(seed)
    x = np.zeros((samples, length), np.int64)
    for row, size in enumerate(rng.integers(4, length + 1, size=samples)):
        x[row, :size] = rng.integers(1, vocabulary, size=size)
    return x.astype(np.int32), (x % classes).astype(np.int32)


@_register(
    "sentiment",
    samples=Parameter(int, "Number of sentences.", minimum=2),
    length=Parameter(int, "Tokens per sentence.", minimum=2),
    vocabulary=Parameter(int, "Tokens are 0 .. vocabulary - 1; 1-5 are positive, 6-10 negative.", minimum=12),
    seed=_seed(),
)
def sentiment(*, samples: int = 200, length: int = 20, vocabulary: int = 50, seed: int = 0) -> Data:
    """Bag-of-words sentiment: label 1 when a sentence holds more positive words than negative ones.

    Tokens 1-5 are positive words, 6-10 negative, the rest neutral; each sentence draws its
    tokens uniformly, so about half are positive. An Embedding with global average pooling learns it.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocabulary, size=(samples, length))
    positive = ((x >= 1) & (x <= 5)).sum(axis=1)
    negative = ((x >= 6) & (x <= 10)).sum(axis=1)
    return x.astype(np.int32), (positive > negative).astype(np.float32)


GENERATORS: dict[str, Callable[..., Data]] = {name: spec.function for name, spec in _REGISTRY.items()}
"""The generator functions by the names spec files use. Calling one directly skips the checks of
:func:`generate`; bad values then fail inside numpy, or not at all."""


def generate(name: str, params: Mapping[str, Any], *, where: str = "data") -> Data:
    """Build the data set ``name`` with ``params``, every mistake a CaseError naming its field.

    ``params`` may be the spec's whole data table: a ``generator`` key in it is skipped. ``where``
    is the path of that table, for field names like ``data.noise``; the caller adds the case.
    """
    if not isinstance(name, str):
        raise CaseError(f"must be a generator name, got {name!r}", field=f"{where}.generator")
    spec = _REGISTRY.get(name)
    if spec is None:
        raise CaseError(
            f"unknown generator {name!r}; valid generators are: {', '.join(_REGISTRY)}",
            field=f"{where}.generator",
            fix=_did_you_mean(name, list(_REGISTRY)),
        )
    if not isinstance(params, Mapping):
        raise CaseError(f"expected a table of parameters, got {type(params).__name__}", field=where)
    values = dict(spec.defaults)
    for key, value in params.items():
        if key == "generator":
            continue
        parameter = spec.parameters.get(key)
        if parameter is None:
            raise CaseError(
                f"unknown parameter {key!r} for generator {name!r}; "
                f"valid parameters are: {', '.join(spec.parameters)}",
                field=f"{where}.{key}",
                fix=_did_you_mean(key, list(spec.parameters)),
            )
        values[key] = parameter.check(value, f"{where}.{key}")
    if spec.check is not None:
        spec.check(values, where)
    return spec.function(**values)


def describe() -> dict[str, dict[str, Any]]:
    """Each generator's one-line description and parameters (JSON Schema style, with defaults).

    A fresh, JSON-serialisable dict on every call, so a schema builder may change it freely.
    """
    return {
        name: {
            "description": spec.description,
            "parameters": {
                key: parameter.schema(spec.defaults[key]) for key, parameter in spec.parameters.items()
            },
        }
        for name, spec in _REGISTRY.items()
    }


def _did_you_mean(word: str, valid: list[str]) -> str | None:
    matches = difflib.get_close_matches(str(word), valid, n=1)
    return f"did you mean {matches[0]!r}?" if matches else None
