"""The built-in data generators: shapes, determinism, difficulty, and every mistake as a CaseError.

No TensorFlow: linear separability is judged by a least-squares linear classifier in numpy, which
is what "a single Dense unit could fit this" amounts to here.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

import numpy as np
import pytest

from pytest_convergence.errors import CaseError
from pytest_convergence.spec.datasets import GENERATORS, describe, generate

NAMES = ["xor", "two_moons", "circles", "spirals", "blobs", "linear_regression"]
REAL = ["class_templates", "token_labels", "sentiment"]
"""The real-models catalogue's generators: tf-keras's integration-test data and two NLP-style sets."""
CLASSIFIERS = [name for name in NAMES if name != "linear_regression"]
NOISY = {"xor": {"samples": 40, "noise": 0.1}}
"""Parameters that make a generator's output depend on the seed (xor's 4 points do not)."""


def linear_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Training accuracy of the least-squares linear classifier (targets ±1, with a bias)."""
    design = np.column_stack([x, np.ones(len(x))]).astype(np.float64)
    weights, *_ = np.linalg.lstsq(design, 2.0 * y - 1.0, rcond=None)
    return float(np.mean((design @ weights > 0) == (y > 0.5)))


def least_squares_residual(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted (weights..., bias) and the residuals of an ordinary least-squares fit."""
    design = np.column_stack([x, np.ones(len(x))]).astype(np.float64)
    coefficients, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    return coefficients, y - design @ coefficients


# ------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("name", "params", "shape"),
    [
        ("xor", {}, (4, 2)),
        ("xor", {"samples": 12}, (12, 2)),
        ("two_moons", {}, (100, 2)),
        ("two_moons", {"samples": 7}, (7, 2)),
        ("circles", {"samples": 30}, (30, 2)),
        ("spirals", {"samples": 31}, (31, 2)),
        ("blobs", {}, (100, 2)),
        ("blobs", {"samples": 9, "features": 5, "centers": 3}, (9, 5)),
        ("blobs", {"features": 1}, (100, 1)),
        ("linear_regression", {}, (100, 1)),
        ("linear_regression", {"samples": 20, "features": 3}, (20, 3)),
    ],
)
def test_shapes_and_dtypes(name: str, params: dict[str, Any], shape: tuple[int, int]) -> None:
    x, y = generate(name, params)
    assert x.shape == shape
    assert y.shape == (shape[0],)
    assert x.dtype == np.float32
    assert y.dtype == np.float32
    assert np.all(np.isfinite(x))
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_a_direct_call(name: str) -> None:
    x, y = generate(name, {})
    direct_x, direct_y = GENERATORS[name]()
    np.testing.assert_array_equal(x, direct_x)
    np.testing.assert_array_equal(y, direct_y)


# ------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_data_other_seed_other_data(name: str) -> None:
    params = NOISY.get(name, {})
    first = generate(name, {**params, "seed": 3})
    again = generate(name, {**params, "seed": 3})
    other = generate(name, {**params, "seed": 4})
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("name", NAMES)
def test_the_global_random_state_plays_no_part(name: str) -> None:
    np.random.seed(1)
    first = generate(name, {"seed": 5})
    np.random.seed(2)
    np.random.random(10)
    second = generate(name, {"seed": 5})
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


@pytest.mark.parametrize("name", ["xor", "two_moons", "circles", "spirals", "blobs"])
def test_noise_scales_one_draw(name: str) -> None:
    """For one seed, more noise moves the same points further: x(noise) = x(0) + noise·z."""
    base = {"samples": 40} if name == "xor" else {}
    clean, labels = generate(name, {**base, "noise": 0})
    x1, labels1 = generate(name, {**base, "noise": 0.1})
    x3, labels3 = generate(name, {**base, "noise": 0.3})
    np.testing.assert_array_equal(labels, labels1)
    np.testing.assert_array_equal(labels, labels3)
    np.testing.assert_allclose(x3 - clean, 3 * (x1 - clean), atol=1e-5)
    assert np.std(x1 - clean) == pytest.approx(0.1, rel=0.35)


# ------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("name", ["xor", "two_moons", "circles", "spirals", "blobs"])
@pytest.mark.parametrize("samples", [8, 100])
def test_two_classes_balanced(name: str, samples: int) -> None:
    _, y = generate(name, {"samples": samples})
    assert set(np.unique(y)) == {0.0, 1.0}
    assert np.count_nonzero(y == 0) == np.count_nonzero(y == 1) == samples // 2


@pytest.mark.parametrize("name", ["two_moons", "circles", "spirals"])
def test_odd_samples_split_within_one(name: str) -> None:
    _, y = generate(name, {"samples": 11})
    assert sorted(np.bincount(y.astype(int))) == [5, 6]


def test_blobs_labels_are_the_blob_indices() -> None:
    _, y = generate("blobs", {"samples": 100, "centers": 3})
    assert set(np.unique(y)) == {0.0, 1.0, 2.0}
    assert sorted(np.bincount(y.astype(int))) == [33, 33, 34]


def test_classes_are_shuffled_together() -> None:
    """Unshuffled training (shuffle = false) still sees both classes in the first batch."""
    for name in ["two_moons", "circles", "spirals", "blobs"]:
        _, y = generate(name, {"samples": 200})
        assert 0 < y[:32].mean() < 1, name


def test_xor_is_the_textbook_table_repeated_in_order() -> None:
    x, y = generate("xor", {"seed": 9})
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    x12, y12 = generate("xor", {"samples": 12})
    np.testing.assert_array_equal(x12, np.tile(x, (3, 1)))
    np.testing.assert_array_equal(y12, np.tile(y, 3))


# ------------------------------------------------------------------------------- geometry
def test_circles_radii_are_one_and_factor() -> None:
    x, y = generate("circles", {"noise": 0, "factor": 0.3})
    radius = np.linalg.norm(x, axis=1)
    np.testing.assert_allclose(radius[y == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(radius[y == 1], 0.3, rtol=1e-6)


def test_spirals_are_each_other_turned_half_a_turn() -> None:
    x, y = generate("spirals", {"noise": 0, "samples": 60})
    first, second = x[y == 0], x[y == 1]
    order = np.lexsort(first.T)
    np.testing.assert_allclose(
        np.sort(np.linalg.norm(first, axis=1)), np.sort(np.linalg.norm(second, axis=1))
    )
    np.testing.assert_allclose(first[order], (-second)[np.lexsort((-second).T)], atol=1e-6)
    assert np.linalg.norm(x, axis=1).min() == pytest.approx(0.1, rel=1e-6)


@pytest.mark.parametrize(("centers", "features"), [(2, 1), (3, 1), (2, 2), (5, 2), (4, 6)])
def test_blob_centres_are_placed_not_drawn(centers: int, features: int) -> None:
    """The nearest centres are 2·spread·sin(π/k) apart (2·spread/(k-1) on a line) for every seed."""
    spread = 2.0
    expected = 2 * spread * (math.sin(math.pi / centers) if features > 1 else 1 / (centers - 1))
    for seed in range(3):
        x, y = generate(
            "blobs", {"centers": centers, "features": features, "spread": spread, "noise": 0, "seed": seed}
        )
        centres = np.array([x[y == label][0] for label in range(centers)])
        assert np.all(x == centres[y.astype(int)])
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(centers) * 1e9
        assert gaps.min() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------- difficulty
@pytest.mark.parametrize(
    ("name", "params", "at_most"),
    [
        ("xor", {}, 0.75),
        ("xor", {"samples": 400, "noise": 0.1}, 0.75),
        ("two_moons", {"samples": 400}, 0.92),
        ("two_moons", {"samples": 400, "noise": 0}, 0.92),
        ("circles", {"samples": 400}, 0.7),
        ("spirals", {"samples": 400}, 0.8),
        ("spirals", {"samples": 400, "turns": 3}, 0.8),
    ],
)
def test_not_linearly_separable(name: str, params: dict[str, Any], at_most: float) -> None:
    for seed in range(3):
        x, y = generate(name, {**params, "seed": seed})
        assert linear_accuracy(x, y) <= at_most


@pytest.mark.parametrize("features", [1, 2, 5])
def test_far_blobs_are_linearly_separable(features: int) -> None:
    for seed in range(10):
        x, y = generate(
            "blobs", {"samples": 200, "features": features, "spread": 5.0, "noise": 0.5, "seed": seed}
        )
        assert linear_accuracy(x, y) == 1.0


def test_blobs_overlap_when_the_noise_reaches_the_spread() -> None:
    x, y = generate("blobs", {"samples": 400, "spread": 1.0, "noise": 2.0})
    assert linear_accuracy(x, y) < 0.9


# ------------------------------------------------------------------------------- regression
@pytest.mark.parametrize("features", [1, 4])
def test_linear_regression_is_recovered_to_the_noise(features: int) -> None:
    x, y = generate("linear_regression", {"samples": 2000, "features": features, "noise": 0.2, "seed": 1})
    _, residual = least_squares_residual(x, y)
    assert np.std(residual) == pytest.approx(0.2, rel=0.1)
    assert abs(np.mean(residual)) < 1e-3


def test_linear_regression_without_noise_is_exact() -> None:
    x, y = generate("linear_regression", {"samples": 50, "features": 3, "noise": 0, "seed": 2})
    _, residual = least_squares_residual(x, y)
    assert np.max(np.abs(residual)) < 1e-5


def test_linear_regression_weights_depend_on_the_seed_not_the_samples() -> None:
    small = least_squares_residual(*generate("linear_regression", {"samples": 10, "noise": 0, "features": 2}))
    large = least_squares_residual(
        *generate("linear_regression", {"samples": 500, "noise": 0, "features": 2})
    )
    other = least_squares_residual(
        *generate("linear_regression", {"samples": 500, "noise": 0, "features": 2, "seed": 1})
    )
    np.testing.assert_allclose(small[0], large[0], atol=1e-5)
    assert not np.allclose(large[0], other[0], atol=1e-2)


# ------------------------------------------------------------------------------- inputs
def test_the_whole_data_table_may_be_passed() -> None:
    table = {"generator": "two_moons", "samples": 20, "seed": 2}
    np.testing.assert_array_equal(
        generate("two_moons", table)[0], generate("two_moons", {"samples": 20, "seed": 2})[0]
    )


def test_numpy_numbers_are_accepted() -> None:
    x, _ = generate("circles", {"samples": np.int64(10), "noise": np.float32(0.1), "factor": 1 / 3})
    assert x.shape == (10, 2)


# ------------------------------------------------------------------------------- describe
def test_describe_lists_every_generator_with_its_defaults() -> None:
    described = describe()
    assert list(described) == [*NAMES, *REAL] == list(GENERATORS)
    json.dumps(described)
    for name, entry in described.items():
        assert entry["description"] and "\n" not in entry["description"]
        signature = inspect.signature(GENERATORS[name]).parameters
        assert {key: p["default"] for key, p in entry["parameters"].items()} == {
            key: list(p.default) if isinstance(p.default, tuple) else p.default
            for key, p in signature.items()
        }
        for key, parameter in entry["parameters"].items():
            assert parameter["type"] in {"integer", "number", "array"}, (name, key)
            assert parameter["description"], (name, key)
        assert {"samples", "seed"} <= set(entry["parameters"])
        if name in NAMES:
            assert "noise" in entry["parameters"]


def test_describe_publishes_the_bounds_in_json_schema_words() -> None:
    described = describe()
    assert described["xor"]["parameters"]["samples"] == {
        "type": "integer",
        "default": 4,
        "description": "Number of points: the 4 XOR points, each repeated samples / 4 times.",
        "minimum": 4,
        "multipleOf": 4,
    }
    factor = described["circles"]["parameters"]["factor"]
    assert (factor["exclusiveMinimum"], factor["exclusiveMaximum"]) == (0, 1)
    assert described["two_moons"]["parameters"]["seed"]["minimum"] == 0
    described["xor"]["parameters"].clear()
    assert describe()["xor"]["parameters"], "describe() hands out a fresh copy"


# ------------------------------------------------------------------------------- errors
VALID_GENERATORS = "xor, two_moons, circles, spirals, blobs, linear_regression"

BAD = [
    pytest.param(
        "two_moon",
        {},
        "data.generator",
        [f"unknown generator 'two_moon'; valid generators are: {VALID_GENERATORS}"],
        "did you mean 'two_moons'?",
        id="generator-typo",
    ),
    pytest.param("mnist", {}, "data.generator", ["unknown generator 'mnist'"], None, id="generator-unknown"),
    pytest.param(3, {}, "data.generator", ["must be a generator name, got 3"], None, id="generator-int"),
    pytest.param("xor", [4], "data", ["expected a table of parameters, got list"], None, id="params-list"),
    pytest.param(
        "two_moons",
        {"nosie": 0.1},
        "data.nosie",
        ["unknown parameter 'nosie' for generator 'two_moons'; valid parameters are: samples, noise, seed"],
        "did you mean 'noise'?",
        id="param-typo",
    ),
    pytest.param(
        "two_moons", {"factor": 0.5}, "data.factor", ["unknown parameter 'factor'"], None, id="param-other"
    ),
    pytest.param(
        "blobs",
        {"center": 3},
        "data.center",
        ["valid parameters are: samples, centers, features, spread, noise, seed"],
        "did you mean 'centers'?",
        id="param-blobs",
    ),
    pytest.param(
        "two_moons", {"samples": 0}, "data.samples", ["integer >= 2", "got 0"], None, id="samples-0"
    ),
    pytest.param("blobs", {"samples": -3}, "data.samples", ["integer >= 1, got -3"], None, id="samples-neg"),
    pytest.param(
        "circles",
        {"samples": 1},
        "data.samples",
        ["integer >= 2 (one per class), got 1"],
        None,
        id="samples-1",
    ),
    pytest.param(
        "spirals", {"samples": 2.5}, "data.samples", ["must be an integer, got 2.5"], None, id="s-float"
    ),
    pytest.param(
        "spirals",
        {"samples": 200.0},
        "data.samples",
        ["must be an integer, got 200.0"],
        "write 200 without the decimal point",
        id="samples-float-whole",
    ),
    pytest.param(
        "spirals",
        {"samples": "200"},
        "data.samples",
        ["must be an integer, got '200'"],
        "write 200 without the quotes",
        id="samples-string",
    ),
    pytest.param(
        "spirals", {"samples": True}, "data.samples", ["integer, got True"], None, id="samples-bool"
    ),
    pytest.param(
        "xor",
        {"samples": 6},
        "data.samples",
        ["must be a multiple of 4 (each of the 4 XOR points repeated equally), got 6"],
        "use 4 or 8",
        id="xor-6",
    ),
    pytest.param("xor", {"samples": 2}, "data.samples", ["integer >= 4", "got 2"], None, id="xor-2"),
    pytest.param("two_moons", {"noise": -0.1}, "data.noise", ["number >= 0, got -0.1"], None, id="noise-neg"),
    pytest.param(
        "circles", {"noise": math.nan}, "data.noise", ["finite number, got nan"], None, id="noise-nan"
    ),
    pytest.param(
        "circles", {"noise": math.inf}, "data.noise", ["finite number, got inf"], None, id="noise-inf"
    ),
    pytest.param(
        "two_moons",
        {"noise": "0.1"},
        "data.noise",
        ["must be a number, got '0.1'"],
        "write 0.1 without the quotes",
        id="noise-string",
    ),
    pytest.param("two_moons", {"noise": "high"}, "data.noise", ["number, got 'high'"], None, id="noise-word"),
    pytest.param("xor", {"noise": None}, "data.noise", ["must be a number, got None"], None, id="noise-none"),
    pytest.param(
        "two_moons", {"seed": 1.5}, "data.seed", ["must be an integer, got 1.5"], None, id="seed-float"
    ),
    pytest.param("two_moons", {"seed": -1}, "data.seed", ["integer >= 0, got -1"], None, id="seed-negative"),
    pytest.param(
        "blobs", {"seed": True}, "data.seed", ["must be an integer, got True"], None, id="seed-bool"
    ),
    pytest.param(
        "circles", {"factor": 1.0}, "data.factor", ["number < 1", "strictly inside"], None, id="f-1"
    ),
    pytest.param("circles", {"factor": 0}, "data.factor", ["number > 0", "got 0"], None, id="factor-0"),
    pytest.param("circles", {"factor": 1.5}, "data.factor", ["< 1", "got 1.5"], None, id="factor-big"),
    pytest.param("spirals", {"turns": 0}, "data.turns", ["must be a number > 0, got 0"], None, id="turns-0"),
    pytest.param("spirals", {"turns": -1.0}, "data.turns", ["> 0, got -1.0"], None, id="turns-neg"),
    pytest.param("blobs", {"centers": 1}, "data.centers", ["integer >= 2, got 1"], None, id="centers-1"),
    pytest.param(
        "blobs",
        {"centers": 4, "samples": 3},
        "data.samples",
        ["must be at least centers (4) so that every blob has a point, got 3"],
        None,
        id="blobs-fewer-samples",
    ),
    pytest.param("blobs", {"spread": 0}, "data.spread", ["number > 0", "one centre"], None, id="spread-0"),
    pytest.param("blobs", {"features": 0}, "data.features", ["integer >= 1, got 0"], None, id="features-0"),
    pytest.param(
        "linear_regression",
        {"features": 2.0},
        "data.features",
        ["must be an integer, got 2.0"],
        "write 2 without the decimal point",
        id="features-float",
    ),
]


@pytest.mark.parametrize(("name", "params", "field", "fragments", "fix"), BAD)
def test_mistakes_are_case_errors_naming_the_field(
    name: Any, params: Any, field: str, fragments: list[str], fix: str | None
) -> None:
    with pytest.raises(CaseError) as caught:
        generate(name, params)
    error = caught.value
    message = str(error)
    assert error.field == field
    assert error.case is None, "the caller adds the case"
    assert message.startswith(f"field {field!r}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert error.fix == fix
    assert isinstance(error, ValueError)


def test_the_field_path_starts_where_the_caller_says() -> None:
    with pytest.raises(CaseError) as caught:
        generate("two_moons", {"noise": -1}, where="cases[2].data")
    assert caught.value.field == "cases[2].data.noise"
    with pytest.raises(CaseError) as caught:
        generate("moons", {}, where="cases[2].data")
    assert caught.value.field == "cases[2].data.generator"
    assert caught.value.fix == "did you mean 'two_moons'?"


# ------------------------------------------------------------------- real-model generators
@pytest.mark.parametrize(
    ("params", "x_shape", "y_shape"),
    [
        ({"shape": [10]}, (100, 10), (100, 2)),
        ({"shape": [4, 10], "samples": 30}, (30, 4, 10), (30, 2)),
        ({"shape": [10, 10, 3], "classes": 3, "one_hot": 0}, (100, 10, 10, 3), (100,)),
    ],
)
def test_class_templates_give_any_sample_shape(
    params: dict[str, object], x_shape: tuple[int, ...], y_shape: tuple[int, ...]
) -> None:
    x, y = generate("class_templates", params)
    assert x.shape == x_shape and y.shape == y_shape and x.dtype == np.float32
    labels = y.argmax(axis=1) if y.ndim == 2 else y.astype(int)
    assert set(np.unique(labels)) == set(range(int(params.get("classes", 2))))  # type: ignore[call-overload]
    if y.ndim == 2:
        assert np.array_equal(y.sum(axis=1), np.ones(len(y)))


def test_class_templates_put_each_class_around_its_own_template() -> None:
    x, y = generate("class_templates", {"shape": [10], "samples": 400, "noise": 0.1, "seed": 3})
    labels = y.argmax(axis=1)
    centres = np.stack([x[labels == k].mean(axis=0) for k in (0, 1)])
    spread = max(float(x[labels == k].std(axis=0).max()) for k in (0, 1))
    assert spread < 0.2 < float(np.linalg.norm(centres[0] - centres[1]))


@pytest.mark.parametrize("name", REAL)
def test_real_generators_are_functions_of_their_seed(name: str) -> None:
    first, again, other = (generate(name, {"seed": seed}) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_token_labels_pad_with_zero_and_label_every_token() -> None:
    x, y = generate("token_labels", {"samples": 50, "length": 12, "vocabulary": 9, "classes": 3})
    assert x.shape == y.shape == (50, 12) and x.dtype == np.int32
    lengths = (x != 0).sum(axis=1)
    assert lengths.min() >= 4 and lengths.max() <= 12
    for row, size in zip(x, lengths):
        assert np.all(row[:size] != 0) and np.all(row[size:] == 0)  # padding only after the end
    assert np.array_equal(y, x % 3) and x.max() < 9


def test_sentiment_labels_count_positive_against_negative_words() -> None:
    x, y = generate("sentiment", {"samples": 300})
    positive = ((x >= 1) & (x <= 5)).sum(axis=1)
    negative = ((x >= 6) & (x <= 10)).sum(axis=1)
    assert np.array_equal(y, (positive > negative).astype(np.float32))
    assert 0.2 < y.mean() < 0.8


@pytest.mark.parametrize("shape", [[], [0], [2.5], "10", [True]])
def test_a_bad_shape_names_the_field_and_gives_examples(shape: object) -> None:
    with pytest.raises(CaseError, match="must be a shape") as caught:
        generate("class_templates", {"shape": shape})
    assert caught.value.field == "data.shape" and "[10, 10, 3]" in (caught.value.fix or "")
