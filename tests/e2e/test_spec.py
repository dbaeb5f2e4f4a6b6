"""Spec files (``*.convergence.toml``): loading, every mistake as a SpecError naming file and field,
the Keras checks, the published JSON Schema, and spec files collected end to end by pytest."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from factories import HEAVY_MODULES_CONFTEST, KERAS_MAJOR, seed_spec

from pytest_convergence.case import Expectation
from pytest_convergence.dtypes import DEFAULT_DTYPES
from pytest_convergence.outcome import Outcome
from pytest_convergence.spec.datasets import generate
from pytest_convergence.spec.keras_check import check_with_keras
from pytest_convergence.spec.loader import Spec, SpecError, load_spec
from pytest_convergence.spec.schema import SCHEMA, SCHEMA_FILE, SchemaViolation, validate, write_schema

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BUNDLED = sorted(FIXTURES.glob("*.convergence.toml"))

# A small valid spec; tests replace one piece of it to make one mistake.
MODEL = """
[model]
input_shape = [1]
layers = [{ class_name = "Dense", config = { units = 1 } }]
"""
INLINE_DATA = """
[data]
x = [[-1.0], [1.0]]
y = [1.0, 0.0]
"""
MINIMAL = 'steps = 10\nloss = "mean_squared_error"\n' + MODEL + INLINE_DATA


def write(directory: Path, text: str, name: str = "case.convergence.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_error(directory: Path, text: str, name: str = "case.convergence.toml") -> SpecError:
    path = write(directory, text, name)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    error = info.value
    assert error.path == path
    assert str(error).startswith(f"{path}: "), "the message starts with the file"
    return error


# ---------------------------------------------------------------------------------- loading
def test_inline_data_and_every_setting_reach_the_case(tmp_path: Path) -> None:
    header = """
        name = "seed"
        description = "the seed model"
        dtypes = ["float32", "float16", "float32"]
        steps = 40
        batch_size = 2
        shuffle = false
        seed = 7
        target_loss = 1e-3
        engine = "xla"
        metrics = ["accuracy"]
        """
    footer = """
        [tolerance]
        rtol = { float32 = 2e-3 }

        [expect.float16]
        outcome = ["oscillating", "stalled"]
        converged = true

        [expect.float32]
        final_loss_below = 0.5
        """
    path = write(tmp_path, seed_spec(textwrap.dedent(header), textwrap.dedent(footer)))
    spec = load_spec(path)
    assert isinstance(spec, Spec)
    assert spec.path == path
    assert spec.description == "the seed model"
    assert spec.dtypes == ["float32", "float16"], "the user's order, repeats dropped"
    case = spec.case
    assert case.name == "seed"
    assert (case.steps, case.epochs, case.batch_size, case.shuffle, case.seed) == (40, None, 2, False, 7)
    assert case.target_loss == 1e-3
    assert case.engine == "xla"
    assert list(case.metrics) == ["accuracy"]
    assert case.loss == {"class_name": "BinaryCrossentropy", "config": {"from_logits": True}}
    assert case.optimizer == {"class_name": "RMSprop", "config": {"learning_rate": 2.55}}
    np.testing.assert_array_equal(case.x, [[-1.0], [1.0]])
    np.testing.assert_array_equal(case.y, [1.0, 0.0])
    assert case.x.dtype == np.float64
    assert case.snapshot_tolerance == {"rtol": {"float32": 2e-3}}
    assert case.expectations["float16"] == Expectation(
        converged=True, outcome=(Outcome.OSCILLATING, Outcome.STALLED)
    )
    assert case.expectations["float32"] == Expectation(final_loss_below=0.5)
    assert case.model == {
        "class_name": "Sequential",
        "config": {
            "name": "model",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 1]}},
                {"class_name": "Dense", "config": {"units": 1}},
            ],
        },
    }
    assert spec.layer_configs == [{"class_name": "Dense", "config": {"units": 1}}]


def test_name_dtypes_and_optimizer_default(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL, name="my-case.v2.convergence.toml"))
    assert spec.case.name == "my-case.v2", "the file name without .convergence.toml"
    assert spec.dtypes == list(DEFAULT_DTYPES) == ["float16", "float32", "float64"]
    assert spec.case.optimizer == "rmsprop"
    assert spec.case.expectations == {}
    assert spec.description == ""


def test_epochs_instead_of_steps(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL.replace("steps = 10", "epochs = 3")))
    assert (spec.case.steps, spec.case.epochs, spec.case.total_steps) == (None, 3, 3)


def test_data_from_an_npz_beside_the_spec(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.array([0, 1, 0, 1, 0, 1], dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y, unused=np.zeros(3))
    text = MINIMAL.replace(INLINE_DATA, '\n[data]\nnpz = "d.npz"\n').replace(
        "input_shape = [1]", "input_shape = [2]"
    )
    spec = load_spec(write(tmp_path, text))
    np.testing.assert_array_equal(spec.case.x, x)
    np.testing.assert_array_equal(spec.case.y, y)
    assert spec.case.num_samples == 6


GENERATOR_FORMS = [
    ("xor", {}, (4, 2)),
    ("xor", {"samples": 12, "noise": 0.1, "seed": 2}, (12, 2)),
    ("two_moons", {"samples": 20, "noise": 0.2, "seed": 3}, (20, 2)),
    ("circles", {"samples": 30, "noise": 0.05, "factor": 0.3}, (30, 2)),
    ("spirals", {"samples": 40, "turns": 2.0}, (40, 2)),
    ("blobs", {"samples": 30, "centers": 3, "features": 4, "spread": 3.0, "noise": 0.5}, (30, 4)),
    ("linear_regression", {"samples": 25, "features": 3, "noise": 0.2}, (25, 3)),
]


@pytest.mark.parametrize(("generator", "params", "shape"), GENERATOR_FORMS)
def test_data_from_each_generator(
    tmp_path: Path, generator: str, params: dict[str, Any], shape: tuple[int, int]
) -> None:
    table = "\n".join(
        [f'generator = "{generator}"', *(f"{key} = {value!r}" for key, value in params.items())]
    )
    spec = load_spec(write(tmp_path, MINIMAL.replace(INLINE_DATA, f"\n[data]\n{table}\n")))
    assert spec.case.x.shape == shape
    assert spec.case.y.shape == (shape[0],)
    expected_x, expected_y = generate(generator, params)
    np.testing.assert_array_equal(spec.case.x, expected_x)
    np.testing.assert_array_equal(spec.case.y, expected_y)


def test_initial_weights_from_an_npz_in_get_weights_order(tmp_path: Path) -> None:
    # twelve arrays: arr_10 and arr_11 must come after arr_9, not after arr_1
    weights = [np.full((index % 3 + 1,), float(index)) for index in range(12)]
    np.savez(tmp_path / "w.npz", *weights)
    spec = load_spec(write(tmp_path, 'initial_weights = "w.npz"\n' + MINIMAL))
    assert spec.case.initial_weights is not None
    assert len(spec.case.initial_weights) == 12
    for loaded, expected in zip(spec.case.initial_weights, weights):
        np.testing.assert_array_equal(loaded, expected)


def test_initial_weights_file_missing_names_the_field(tmp_path: Path) -> None:
    error = spec_error(tmp_path, 'initial_weights = "w.npz"\n' + MINIMAL)
    assert error.field == "initial_weights"
    assert "w.npz" in str(error) and "relative to the spec file" in str(error)


def test_a_builder_is_resolved_only_when_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # resolving puts the spec's folder on sys.path
    module = "convergence_spec_builder_module"
    monkeypatch.delitem(sys.modules, module, raising=False)
    text = MINIMAL.replace(MODEL, f'\n[model]\nbuilder = "{module}:build"\n')
    spec = load_spec(write(tmp_path, text))  # the module does not exist yet: not imported at load
    assert callable(spec.case.model)
    assert spec.layer_configs == []
    assert module not in sys.modules
    (tmp_path / f"{module}.py").write_text("def build(dtype):\n    return ('model in', dtype)\n")
    try:
        assert spec.case.model("float16") == ("model in", "float16")
    finally:
        sys.modules.pop(module, None)


def test_a_builder_that_cannot_be_imported_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = load_spec(
        write(tmp_path, MINIMAL.replace(MODEL, '\n[model]\nbuilder = "no_such_module_xyz:build"\n'))
    )
    with pytest.raises(SpecError) as info:
        spec.case.model("float32")
    assert info.value.field == "model.builder"
    assert "cannot import 'no_such_module_xyz'" in str(info.value)

    module = "convergence_spec_builder_without_function"
    (tmp_path / f"{module}.py").write_text("x = 1\n")
    importlib.invalidate_caches()  # the folder was searched a moment ago
    spec = load_spec(write(tmp_path, MINIMAL.replace(MODEL, f'\n[model]\nbuilder = "{module}:build"\n')))
    try:
        with pytest.raises(SpecError, match=f"model.builder: '{module}' has no function 'build'"):
            spec.case.model("float32")
    finally:
        sys.modules.pop(module, None)


SEQUENTIAL_CONFIG = {
    "class_name": "Sequential",
    "config": {
        "name": "whole",
        "layers": [
            {"class_name": "InputLayer", "config": {"shape": [1]}},
            {"class_name": "Dense", "config": {"units": 3, "activation": "tanh"}},
            {"class_name": "Dense", "config": {"units": 1}},
        ],
    },
}
CONFIG_MODEL = """
[model.config]
class_name = "Sequential"
[model.config.config]
name = "whole"
layers = [
  { class_name = "InputLayer", config = { shape = [1] } },
  { class_name = "Dense", config = { units = 3, activation = "tanh" } },
  { class_name = "Dense", config = { units = 1 } },
]
"""


def test_a_whole_model_config(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL.replace(MODEL, CONFIG_MODEL)))
    assert spec.case.model == SEQUENTIAL_CONFIG
    assert spec.layer_configs == []


def test_loading_does_not_import_tensorflow(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "two_moons"\nsamples = 20\n'))
    code = (
        "import sys, pathlib\n"
        "from pytest_convergence.spec.loader import load_spec\n"
        f"for path in [*pathlib.Path({str(FIXTURES)!r}).glob('*.convergence.toml'),"
        f" pathlib.Path({str(tmp_path / 'case.convergence.toml')!r})]:\n"
        "    load_spec(path)\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_bundled_spec_loads(tmp_path: Path) -> None:
    assert len(BUNDLED) >= 9
    for path in BUNDLED:
        spec = load_spec(path)
        document = tomllib.loads(path.read_text())
        assert spec.case.name == document["name"]
        # a dtype's, or a backend's own for one of the dtypes (jax-bfloat16)
        dtypes = {key.partition("-")[2] if "-" in key else key for key in spec.case.expectations}
        assert dtypes <= set(spec.dtypes)


# ---------------------------------------------------------------------------------- mistakes
MISTAKES = [
    pytest.param(
        MINIMAL.replace("steps = 10", "stpes = 10"),
        "stpes",
        ["unknown key 'stpes'", "did you mean 'steps'?", "valid keys: name,"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        MINIMAL + '[expect.float16]\noutcom = "stalled"\n',
        "expect.float16.outcom",
        ["unknown key 'outcom'", "did you mean 'outcome'?", "valid keys: converged, outcome"],
        id="unknown-nested-key",
    ),
    pytest.param(
        MINIMAL.replace("steps = 10", 'steps = "100"'),
        "steps",
        ["expected an integer, got str '100'"],
        id="steps-a-string",
    ),
    pytest.param(
        MINIMAL.replace("steps = 10", "steps = true"),
        "steps",
        ["expected an integer, got true"],
        id="steps-a-boolean",
    ),
    pytest.param(
        MINIMAL.replace('layers = [{ class_name = "Dense", config = { units = 1 } }]', "layers = {}"),
        "model.layers",
        ["expected a list, got a table"],
        id="layers-a-table",
    ),
    pytest.param(
        MINIMAL.replace("steps = 10", "steps = 10.0"),
        "steps",
        ["expected an integer, got float 10.0"],
        id="steps-a-float",
    ),
    pytest.param(
        MINIMAL.replace("steps = 10", "steps = 0"),
        "steps",
        ["must be greater than 0, got 0"],
        id="steps-zero",
    ),
    pytest.param(
        MINIMAL.replace("steps = 10", "steps = 10\nepochs = 2"),
        "steps",
        ["give steps or epochs, not both"],
        id="steps-and-epochs",
    ),
    pytest.param(
        MINIMAL.replace("steps = 10", ""),
        "steps",
        ["give steps (optimizer steps) or epochs (passes over the data)"],
        id="neither-steps-nor-epochs",
    ),
    pytest.param(
        'dtypes = ["float32"]\n' + MINIMAL + '[expect.float16]\noutcome = "stalled"\n',
        "expect.float16",
        ["an expectation for float16, which is not in dtypes (float32)"],
        id="expectation-for-a-dtype-not-run",
    ),
    pytest.param(
        'dtypes = ["float32", "float17"]\n' + MINIMAL,
        "dtypes[1]",
        ["'float17' is not one of: float16, bfloat16, float32", "did you mean 'float16'?"],
        id="unknown-dtype",
    ),
    pytest.param(
        MINIMAL + '[expect.float17]\noutcome = "stalled"\n',
        "expect.float17",
        ["'float17' is not one of:", "did you mean 'float16'?"],
        id="expectation-for-an-unknown-dtype",
    ),
    pytest.param(
        MINIMAL + '[expect.float16]\noutcome = "stalld"\n',
        "expect.float16.outcome",
        ["'stalld' is not one of: reached-zero, stalled,", "did you mean 'stalled'?"],
        id="unknown-outcome",
    ),
    pytest.param(
        MINIMAL + '[expect.float16]\noutcome = ["stalled", "platau"]\n',
        "expect.float16.outcome[1]",
        ["'platau' is not one of:", "did you mean 'plateau'?"],
        id="unknown-outcome-in-a-list",
    ),
    pytest.param(
        MINIMAL.replace(INLINE_DATA, '\n[data]\nnpz = "missing.npz"\n'),
        "data.npz",
        ["file not found:", "missing.npz", "(paths are relative to the spec file)"],
        id="missing-npz",
    ),
    pytest.param(
        MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "two_moon"\n'),
        "data.generator",
        ["'two_moon' is not one of: xor, two_moons,", "did you mean 'two_moons'?"],
        id="unknown-generator",
    ),
    pytest.param(
        MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "two_moons"\nnosie = 0.1\n'),
        "data.nosie",
        ["unknown key 'nosie'", "did you mean 'noise'?"],
        id="unknown-generator-parameter",
    ),
    pytest.param(
        MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "two_moons"\nfactor = 0.5\n'),
        "data.factor",
        [
            "unknown parameter 'factor' for generator 'two_moons'",
            "valid parameters are: samples, noise, seed",
        ],
        id="another-generators-parameter",
    ),
    pytest.param(
        MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "xor"\nsamples = 6\n'),
        "data.samples",
        ["must be a multiple of 4", "got 6"],
        id="generator-parameter-out-of-bounds",
    ),
    pytest.param(
        MINIMAL.replace("y = [1.0, 0.0]", "y = [1.0, 0.0, 1.0]"),
        "data.y",
        ["x has 2 samples but y has 3"],
        id="x-and-y-of-different-lengths",
    ),
    pytest.param(
        MINIMAL.replace("x = [[-1.0], [1.0]]", "x = [[-1.0], [1.0, 2.0]]"),
        "data.x",
        ["expected a rectangular list of numbers"],
        id="ragged-x",
    ),
    pytest.param(
        MINIMAL.replace("y = [1.0, 0.0]\n", ""), "data.y", ["inline data needs y beside x"], id="x-without-y"
    ),
    pytest.param(
        MINIMAL.replace("y = [1.0, 0.0]", 'y = [1.0, 0.0]\nnpz = "d.npz"'),
        "data",
        ["give inline x and y, or npz"],
        id="two-data-sources",
    ),
    pytest.param(
        MINIMAL.replace("input_shape = [1]\n", ""),
        "model.input_shape",
        ["layers need the input shape of one sample"],
        id="layers-without-input-shape",
    ),
    pytest.param(
        MINIMAL.replace("input_shape = [1]", 'input_shape = [1]\nbuilder = "m:build"'),
        "model",
        ["give exactly one of layers (with input_shape), config (a model config) or builder"],
        id="two-model-forms",
    ),
    pytest.param(
        MINIMAL.replace(MODEL, '\n[model]\nbuilder = "mymodule.build"\n'),
        "model.builder",
        ["'mymodule.build' does not have the form package.module:function"],
        id="builder-without-colon",
    ),
    pytest.param(MINIMAL.replace('loss = "mean_squared_error"\n', ""), "loss", ["is required"], id="no-loss"),
    pytest.param(
        MINIMAL.replace('loss = "mean_squared_error"', "loss = 3"),
        "loss",
        ["expected a string or a table, got int 3"],
        id="loss-a-number",
    ),
    pytest.param(
        MINIMAL.replace('{ class_name = "Dense", config = { units = 1 } }', "{ config = { units = 1 } }"),
        "model.layers[0].class_name",
        ["is required"],
        id="layer-without-class-name",
    ),
    pytest.param(
        MINIMAL + "[tolerance]\nrtol = { float32 = -1.0 }\n",
        "tolerance.rtol.float32",
        ["must be at least 0, got -1.0"],
        id="negative-rtol",
    ),
]


@pytest.mark.parametrize(("text", "field", "expected"), MISTAKES)
def test_each_mistake_names_the_file_the_field_and_what_was_expected(
    tmp_path: Path, text: str, field: str, expected: list[str]
) -> None:
    error = spec_error(tmp_path, text)
    assert error.field == field
    message = str(error)
    assert message.startswith(f"{tmp_path / 'case.convergence.toml'}: {field}: ")
    for part in expected:
        assert part in message
    assert "\n" not in message, "one line"


def test_an_npz_without_y_says_which_arrays_it_has(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.ones((2, 1)), labels=np.ones(2))
    error = spec_error(tmp_path, MINIMAL.replace(INLINE_DATA, '\n[data]\nnpz = "d.npz"\n'))
    assert error.field == "data.npz"
    assert "d.npz has no array 'y' (it has x, labels)" in str(error)


def test_a_file_that_is_not_an_npz(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_text("not a zip")
    error = spec_error(tmp_path, MINIMAL.replace(INLINE_DATA, '\n[data]\nnpz = "d.npz"\n'))
    assert error.field == "data.npz"
    assert "cannot read" in str(error) and "as an .npz" in str(error)


def test_a_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    text = MINIMAL.replace('loss = "mean_squared_error"', 'loss = "mean_squared_error"\nseed = = 3')
    error = spec_error(tmp_path, text)
    assert error.field is None
    assert "TOML syntax error" in str(error)
    assert "line 3" in str(error)


def test_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "case.convergence.toml"
    path.write_bytes(b"\xff\xfe steps = 3")
    with pytest.raises(SpecError, match="cannot read the file"):
        load_spec(path)
    with pytest.raises(SpecError, match="cannot read the file"):
        load_spec(tmp_path / "absent.convergence.toml")


def test_a_generator_bound_keeps_its_fix(tmp_path: Path) -> None:
    error = spec_error(tmp_path, MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "xor"\nsamples = 6\n'))
    assert "use 4 or 8" in str(error)


def test_a_shared_generator_parameter_has_the_loosest_bound(tmp_path: Path) -> None:
    document = tomllib.loads(MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "two_moons"\nsamples = 2\n'))
    assert jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
    spec = load_spec(
        write(tmp_path, MINIMAL.replace(INLINE_DATA, '\n[data]\ngenerator = "two_moons"\nsamples = 2\n'))
    )
    assert spec.case.num_samples == 2


# ---------------------------------------------------------------------------------- with Keras
def keras_error(directory: Path, text: str) -> SpecError:
    path = write(directory, text)
    spec = load_spec(path)  # loads: these mistakes need Keras to see
    with pytest.raises(SpecError) as info:
        check_with_keras(spec)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)
    return info.value


TWO_LAYERS = (
    '[{ class_name = "Dense", config = { units = 4, activation = "relu" } }, '
    '{ class_name = "Dense", config = { units = 1 } }]'
)


def test_keras_accepts_a_good_spec_and_a_whole_config(tmp_path: Path) -> None:
    check_with_keras(
        load_spec(
            write(tmp_path, MINIMAL.replace('[{ class_name = "Dense", config = { units = 1 } }]', TWO_LAYERS))
        )
    )
    check_with_keras(load_spec(write(tmp_path, MINIMAL.replace(MODEL, CONFIG_MODEL))))
    for path in BUNDLED:
        check_with_keras(load_spec(path))


def test_keras_unknown_layer_class(tmp_path: Path) -> None:
    layers = TWO_LAYERS.replace(
        'class_name = "Dense", config = { units = 1 }', 'class_name = "Dens", config = { units = 1 }'
    )
    error = keras_error(
        tmp_path, MINIMAL.replace('[{ class_name = "Dense", config = { units = 1 } }]', layers)
    )
    assert error.field == "model.layers[1].class_name"
    assert "Keras has no layer class 'Dens' (did you mean 'Dense'?)" in str(error)


def test_keras_bad_layer_config(tmp_path: Path) -> None:
    error = keras_error(tmp_path, MINIMAL.replace("config = { units = 1 }", "config = { unitz = 1 }"))
    assert error.field == "model.layers[0].config"
    assert "Keras rejects this config" in str(error) and "unitz" in str(error)


def test_keras_unknown_loss_name(tmp_path: Path) -> None:
    error = keras_error(tmp_path, MINIMAL.replace('"mean_squared_error"', '"mean_squared_errr"'))
    assert error.field == "loss"
    assert "Keras does not know the loss 'mean_squared_errr' (did you mean 'mean_squared_error'?)" in str(
        error
    )


def test_keras_unknown_loss_class(tmp_path: Path) -> None:
    error = keras_error(
        tmp_path,
        MINIMAL.replace('loss = "mean_squared_error"', 'loss = { class_name = "BinaryCrossentropi" }'),
    )
    assert error.field == "loss.class_name"
    assert "Keras has no loss class 'BinaryCrossentropi' (did you mean 'BinaryCrossentropy'?)" in str(error)


def test_keras_unknown_optimizer_class(tmp_path: Path) -> None:
    text = MINIMAL + '\n[optimizer]\nclass_name = "RMSpro"\nconfig = { learning_rate = 0.1 }\n'
    error = keras_error(tmp_path, text)
    assert error.field == "optimizer.class_name"
    assert "Keras has no optimizer class 'RMSpro' (did you mean 'RMSprop'?)" in str(error)


def test_keras_bad_optimizer_config(tmp_path: Path) -> None:
    text = MINIMAL + '\n[optimizer]\nclass_name = "RMSprop"\nconfig = { learning_rat = 0.1 }\n'
    error = keras_error(tmp_path, text)
    assert error.field == "optimizer.config"
    assert "learning_rat" in str(error)


def test_keras_unknown_optimizer_name_has_a_hint(tmp_path: Path) -> None:
    error = keras_error(tmp_path, 'optimizer = "rmsprp"\n' + MINIMAL)
    assert error.field == "optimizer"
    assert re.search(r"did you mean '(rmsprop|RMSprop)'\?", str(error))


def test_keras_data_that_does_not_fit_the_input(tmp_path: Path) -> None:
    error = keras_error(
        tmp_path, MINIMAL.replace("x = [[-1.0], [1.0]]", "x = [[-1.0, 0.0, 2.0], [1.0, 0.5, 3.0]]")
    )
    assert error.field == "data.x"
    assert "data of shape (2, 3) does not fit the model's input" in str(error)


def test_keras_targets_that_do_not_fit_the_output(tmp_path: Path) -> None:
    error = keras_error(tmp_path, MINIMAL.replace("y = [1.0, 0.0]", "y = [[1.0, 0.0], [0.0, 1.0]]"))
    assert error.field == "data.y"
    assert "y has 2 values per sample but the model outputs 1" in str(error)


# ---------------------------------------------------------------------------------- JSON Schema
def test_the_published_schema_is_the_schema() -> None:
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == SCHEMA


def test_write_schema_reproduces_the_published_file_byte_for_byte(tmp_path: Path) -> None:
    write_schema(tmp_path / "schema.json")
    assert (tmp_path / "schema.json").read_bytes() == SCHEMA_FILE.read_bytes()


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", BUNDLED, ids=lambda path: path.name)
def test_both_validators_accept_every_bundled_spec(path: Path) -> None:
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    validate(document)


BROKEN_DOCUMENTS = [
    pytest.param(("stpes",), 10, "stpes", id="unknown-top-level-key"),
    pytest.param(
        ("expect",), {"float16": {"outcom": "stalled"}}, "expect.float16.outcom", id="unknown-nested-key"
    ),
    pytest.param(("steps",), "100", "steps", id="steps-a-string"),
    pytest.param(("steps",), True, "steps", id="steps-a-boolean"),
    pytest.param(("steps",), 0, "steps", id="steps-zero"),
    pytest.param(("epochs",), -1, "epochs", id="negative-epochs"),
    pytest.param(("model", "layers"), {}, "model.layers", id="layers-a-table"),
    pytest.param(("model", "layers"), [], "model.layers", id="no-layers"),
    pytest.param(("model", "input_shape"), [0], "model.input_shape[0]", id="zero-input-shape"),
    pytest.param(
        ("model", "layers"), [{"config": {}}], "model.layers[0].class_name", id="layer-without-class"
    ),
    pytest.param(("model",), {"builder": "mymodule.build"}, "model.builder", id="builder-form"),
    pytest.param(("model", "depth"), 3, "model.depth", id="unknown-model-key"),
    pytest.param(("dtypes",), ["float17"], "dtypes[0]", id="unknown-dtype"),
    pytest.param(("dtypes",), [], "dtypes", id="no-dtypes"),
    pytest.param(("expect",), {"float17": {}}, "expect.float17", id="expectation-for-an-unknown-dtype"),
    pytest.param(
        ("expect",), {"float16": {"outcome": "stalld"}}, "expect.float16.outcome", id="unknown-outcome"
    ),
    pytest.param(
        ("expect",), {"float16": {"outcome": []}}, "expect.float16.outcome", id="empty-outcome-list"
    ),
    pytest.param(
        ("expect",), {"float16": {"converged": "yes"}}, "expect.float16.converged", id="converged-a-string"
    ),
    pytest.param(("engine",), "turbo", "engine", id="unknown-engine"),
    pytest.param(("data",), {"generator": "two_moon"}, "data.generator", id="unknown-generator"),
    pytest.param(
        ("data",), {"generator": "two_moons", "nosie": 0.1}, "data.nosie", id="unknown-generator-parameter"
    ),
    pytest.param(("data",), {"generator": "two_moons", "noise": -0.1}, "data.noise", id="negative-noise"),
    pytest.param(("data", "x"), [], "data.x", id="empty-x"),
    pytest.param(("loss",), 3, "loss", id="loss-a-number"),
    pytest.param(("loss",), {"class_name": "MSE", "confg": {}}, "loss.confg", id="loss-unknown-key"),
    pytest.param(("optimizer",), "", "optimizer", id="empty-optimizer-name"),
    pytest.param(
        ("tolerance",), {"rtol": {"float17": 0.1}}, "tolerance.rtol.float17", id="rtol-unknown-dtype"
    ),
    pytest.param(("tolerance",), {"miss_fraction": 1.0}, "tolerance.miss_fraction", id="miss-fraction-one"),
    pytest.param(("initial_weights",), ["w.npz"], "initial_weights", id="initial-weights-a-list"),
]


@pytest.mark.parametrize(("where", "value", "field"), BROKEN_DOCUMENTS)
def test_both_validators_reject_broken_documents(where: tuple[str, ...], value: Any, field: str) -> None:
    document = tomllib.loads(MINIMAL)
    validate(document)  # the starting point is valid
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    table = document
    for key in where[:-1]:
        table = table[key]
    table[where[-1]] = value
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
    with pytest.raises(SchemaViolation) as info:
        validate(document)
    assert info.value.path == field


def test_missing_required_keys_are_rejected_by_both() -> None:
    for key in ("model", "loss", "data"):
        document = tomllib.loads(MINIMAL)
        del document[key]
        assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
        with pytest.raises(SchemaViolation) as info:
            validate(document)
        assert (info.value.path, info.value.message) == (key, "is required")


# ---------------------------------------------------------------------------------- end to end
GOOD_SPEC = seed_spec(
    """name = "seed"
dtypes = ["float16", "float32"]
steps = 300
seed = 0
"""
)
SNAPSHOTS = Path("__snapshots__", "good.convergence")


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(
            GOOD_SPEC.replace("steps = 300", "stpes = 300"),
            "*broken.convergence.toml: stpes: unknown key 'stpes' (did you mean 'steps'?)*",
            id="schema",
        ),
        pytest.param(
            GOOD_SPEC.replace('class_name = "Dense"', 'class_name = "Dens"'),
            "*broken.convergence.toml: model.layers[[]0[]].class_name: Keras has no layer class 'Dens'"
            " (did you mean 'Dense'?)",
            id="keras",
        ),
    ],
)
def test_a_broken_spec_is_one_collection_error_and_the_good_one_still_runs(
    user_suite: pytest.Pytester, broken: str, message: str
) -> None:
    user_suite.makefile(".convergence.toml", good=GOOD_SPEC, broken=broken)
    result = user_suite.runpytest("--convergence", "--snapshot-update", "-v")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*good.convergence.toml::seed[[]float16[]] PASSED*",
            "*good.convergence.toml::seed[[]float32[]] PASSED*",
            "*ERROR collecting broken.convergence.toml*",
            message,
        ]
    )
    output = result.stdout.str()
    assert output.count("ERROR collecting") == 1
    assert "Traceback" not in output and "spec.py" not in output
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_without_the_flag_specs_are_collected_and_skipped_without_tensorflow(
    user_suite: pytest.Pytester,
) -> None:
    # a class name only Keras can reject: without --convergence nobody asks Keras
    user_suite.makefile(
        ".convergence.toml",
        good=GOOD_SPEC,
        keras_typo=GOOD_SPEC.replace('"Dense"', '"Dens"').replace('"seed"', '"typo"'),
    )
    user_suite.makeconftest(HEAVY_MODULES_CONFTEST)
    result = user_suite.runpytest_subprocess("-rs", "-s")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(
        [
            "*HEAVY-MODULES: none",
            "SKIPPED [[]2[]] good.convergence.toml: *run them with `pytest --convergence`*",
        ]
    )
    assert result.ret == pytest.ExitCode.OK
    collected = user_suite.runpytest_subprocess("--co", "-q", "-s")
    collected.stdout.fnmatch_lines(
        [
            "good.convergence.toml::seed[[]float16[]]",
            "good.convergence.toml::seed[[]float32[]]",
            "keras_typo.convergence.toml::typo[[]float16[]]",
            "keras_typo.convergence.toml::typo[[]float32[]]",
            "*HEAVY-MODULES: none",
        ]
    )


# The seed case at learning rate 2.55 for 300 steps in float32: Keras 3's RMSprop, (lr * g) / sqrt(v),
# still descends; Keras 2's, lr * g * rsqrt(v), rounds differently and has reached its plateau.
FLOAT32_SEED_OUTCOME = "descending" if KERAS_MAJOR == 3 else "plateau"


def test_an_unmet_expectation_fails_with_the_outcomes_and_the_diagnosis(user_suite: pytest.Pytester) -> None:
    spec = GOOD_SPEC.replace('dtypes = ["float16", "float32"]', 'dtypes = ["float32"]')
    user_suite.makefile(".convergence.toml", good=spec + '\n[expect.float32]\noutcome = "stalled"\n')
    result = user_suite.runpytest("--convergence", "--snapshot-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*seed [[]float32, loop engine, 300 steps[]]: the run did not meet its expectation",
            f"*- expected outcome stalled, got {FLOAT32_SEED_OUTCOME}",
            f"*diagnosis: float32: {FLOAT32_SEED_OUTCOME}*",
            f"seed*float32*loop*{FLOAT32_SEED_OUTCOME}*300*failed",
        ]
    )
    output = result.stdout.str()
    assert "Traceback" not in output and "def runtest" not in output and "collect.py" not in output


def test_spec_snapshots_are_written_per_case_and_dtype_kept_when_deselected_and_unused_when_removed(
    user_suite: pytest.Pytester,
) -> None:
    """One spec's snapshots through their life: none yet, written, passing on a rerun, kept when a
    dtype is deselected (by --convergence-dtypes or -k, with or without --snapshot-update), and
    reported unused once the spec drops the dtype."""
    user_suite.makefile(".convergence.toml", good=GOOD_SPEC)
    first = user_suite.runpytest("--convergence")
    first.assert_outcomes(failed=2)
    first.stdout.fnmatch_lines(
        ["*seed [[]float16[]]: no snapshot stored yet; create it with*--snapshot-update"]
    )

    written = user_suite.runpytest("--convergence", "--snapshot-update")
    written.assert_outcomes(passed=2)
    written.stdout.fnmatch_lines(["*2 snapshots generated*"])
    stored = sorted(path.name for path in (user_suite.path / SNAPSHOTS).iterdir())
    assert stored == ["seed[float16].convergence.txt", "seed[float32].convergence.txt"]
    float16 = user_suite.path / SNAPSHOTS / "seed[float16].convergence.txt"
    text = float16.read_text()
    assert text.startswith("pytest-convergence snapshot v1\n")
    assert "test: good.convergence.toml::seed[float16]" in text and "dtype: float16" in text
    assert text.endswith("end\n")

    rerun = user_suite.runpytest("--convergence", "--convergence-exact")
    rerun.assert_outcomes(passed=2)
    rerun.stdout.fnmatch_lines(["*2 snapshots passed*"])
    assert rerun.ret == pytest.ExitCode.OK

    # a deselected dtype keeps its snapshot. In a subprocess, as a user runs pytest: in-process the
    # plugins may register in another order
    narrowed = user_suite.runpytest_subprocess("--convergence", "--convergence-dtypes=float32", "-v")
    narrowed.assert_outcomes(passed=1, deselected=1)
    narrowed.stdout.fnmatch_lines(["*good.convergence.toml::seed[[]float32[]] PASSED*"])
    assert "seed[float16] PASSED" not in narrowed.stdout.str()
    assert "snapshot unused" not in narrowed.stdout.str()
    assert narrowed.ret == pytest.ExitCode.OK

    user_suite.runpytest_subprocess("--convergence", "--convergence-dtypes=float32", "--snapshot-update")
    assert float16.exists()

    # spec items are registered before -k deselects any: the other dtype's file stays
    updated = user_suite.runpytest_subprocess("--convergence", "--snapshot-update", "-k", "float32")
    updated.assert_outcomes(passed=1, deselected=1)
    assert float16.exists(), updated.stdout.str()

    # The registration with syrupy takes effect: spec items count as collected, so syrupy looks at
    # their snapshots at all. Without it, a stale snapshot of a spec would go unnoticed.
    user_suite.makefile(".convergence.toml", good=GOOD_SPEC.replace('"float16", ', ""))
    stale = user_suite.runpytest_subprocess("--convergence")
    stale.assert_outcomes(passed=1)
    stale.stdout.fnmatch_lines(["*1 snapshot unused*"])


VALIDATED_SPEC = """
name = "validated"
dtypes = ["float32", "float64"]
epochs = 10
batch_size = 8
validation_split = 0.25
metrics = ["accuracy"]
loss = "categorical_crossentropy"

[model]
input_shape = [4]
layers = [
  { class_name = "Dense", config = { units = 2, activation = "softmax", kernel_regularizer = "l2" } },
]

[optimizer]
class_name = "Adam"
config = { learning_rate = 0.05 }

[data]
generator = "class_templates"
samples = 40
shape = [4]
noise = 0.3
seed = 3

[expect.float32]
metrics = ["val_accuracy >= 0.5", "val_loss < 100"]
"""


def test_a_spec_judges_validation_metrics_and_keras_refusing_a_dtype(user_suite: pytest.Pytester) -> None:
    """Metric expectations and ``raises`` end to end, as a user writes them in a spec file."""
    refusal = '\n[expect.float64]\nraises = "Cannot convert a list containing a tensor"\n'
    if KERAS_MAJOR != 3:  # Keras 2 computes the loss in float64 there and trains
        refusal = '\n[expect.float64]\nmetrics = ["val_accuracy >= 0.0"]\n'
    user_suite.makefile(".convergence.toml", validated=VALIDATED_SPEC + refusal)
    result = user_suite.runpytest("--convergence", "--snapshot-update", "-v")
    result.assert_outcomes(passed=2)
    summary = result.stdout.str().split("convergence summary")[1]
    row64 = next(line for line in summary.splitlines() if line.startswith("validated") and "float64" in line)
    assert ("refused" in row64) == (KERAS_MAJOR == 3)

    failing = VALIDATED_SPEC.replace('"val_accuracy >= 0.5"', '"val_accuracy > 1"')
    user_suite.makefile(".convergence.toml", validated=failing.replace('"float32", "float64"', '"float32"'))
    failed = user_suite.runpytest("--convergence")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*expected val_accuracy > 1 (final epoch), got val_accuracy = *"])


def test_a_declared_refusal_that_trains_fails_and_says_so(user_suite: pytest.Pytester) -> None:
    spec = VALIDATED_SPEC.replace('kernel_regularizer = "l2"', "use_bias = true")
    user_suite.makefile(
        ".convergence.toml", validated=spec + '\n[expect.float64]\nraises = "Cannot convert"\n'
    )
    result = user_suite.runpytest("--convergence", "--snapshot-update")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*expected the training to fail with an error containing 'Cannot convert'*"])
