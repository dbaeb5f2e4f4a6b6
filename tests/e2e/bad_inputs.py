"""The bad inputs a new user tries, as data: what they write, what they run, the first line they read.

Each ``BadInput`` is one mistake in a fresh project. ``tests/e2e/test_bad_inputs.py`` runs every one
as the user would (``pytest --convergence`` through pytester, or the ``pytest-convergence`` command)
and checks its message and exit code; ``tools/bad_inputs_page.py`` renders docs/bad-inputs.md from
this file. The messages are the product's: change one here only when the product's wording changed
on purpose.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field

GROUPS = {
    "marker": "`@pytest.mark.convergence(...)` misspelt: found at collection, naming the test and keyword.",
    "case": "`Case(...)` declared wrongly at module level: found at collection, where the case is written.",
    "spec": "spec files (`*.convergence.toml`): found at collection, naming the file and the field path.",
    "keras": "mistakes only Keras can see: found when the run is built, naming the case, dtype and field.",
    "snapshot": "snapshot files damaged, missing or unwritable.",
    "results": "results and baseline files and their paths.",
    "option": "command-line options and ini keys: usage errors before anything is collected.",
    "cli": "the `pytest-convergence` command.",
    "interrupt": "Ctrl-C (SIGINT to pytest) with `--snapshot-update` and a results file: what survives.",
}


@dataclass(frozen=True)
class BadInput:
    name: str
    group: str
    mistake: str
    """What the user got wrong, in a few words (the page's second column)."""
    files: dict[str, str | bytes]
    """The project, besides ``pytest.ini`` (``[pytest]``) and ``cases.py`` (the seed case)."""
    command: tuple[str, ...]
    """``pytest ...``: in this process (pytester, TensorFlow imported once); ``python -m pytest ...``
    and ``pytest-convergence ...``: a process of their own."""
    message: str
    """The first line of the message, exactly as the user reads it (without pytest's ``E``)."""
    exit_code: int
    keras_says: str = ""
    """The rest of that line, quoted from Keras 3.15; other Keras versions word it otherwise, so
    there only ``message`` is checked (the line starts with it)."""
    interrupt: tuple[str, float] | None = None
    """Ctrl-C (SIGINT) this many seconds after the output first matches this pattern."""
    kept: tuple[str, ...] = field(default=())
    """Files that must be there, byte for byte, after the run."""

    @property
    def line(self) -> str:
        return self.message + self.keras_says


# ------------------------------------------------------------------------------ building blocks
SEED_CASE = """\
from pytest_convergence import Case


def seed(**changes):
    settings = dict(
        layers=[{"class_name": "Dense", "config": {"units": 1}}],
        input_shape=(1,),
        x=[[-1.0], [1.0]],
        y=[1.0, 0.0],
        loss={"class_name": "BinaryCrossentropy", "config": {"from_logits": True}},
        optimizer={"class_name": "RMSprop", "config": {"learning_rate": 0.1}},
        steps=20,
        seed=0,
    )
    settings.update(changes)
    return Case.sequential("seed", **settings)
"""
SPEC_MODEL = """
[model]
input_shape = [1]
layers = [{ class_name = "Dense", config = { units = 1 } }]
"""
SPEC_LOSS = """
[loss]
class_name = "BinaryCrossentropy"
config = { from_logits = true }
"""
SPEC_OPTIMIZER = """
[optimizer]
class_name = "RMSprop"
config = { learning_rate = 0.1 }
"""
SPEC_DATA = """
[data]
x = [[-1.0], [1.0]]
y = [1.0, 0.0]
"""
DTYPES = "mixed_float16, mixed_bfloat16"  # the end of every list of valid dtypes


def spec(
    header: str = 'dtypes = ["float32"]\nsteps = 20',
    *,
    model: str = SPEC_MODEL,
    loss: str = SPEC_LOSS,
    optimizer: str = SPEC_OPTIMIZER,
    data: str = SPEC_DATA,
    footer: str = "",
) -> str:
    """A spec file of the seed model, with one part replaced."""
    return header + "\n" + model + loss + optimizer + data + footer


def marker_test(marker: str) -> str:
    return (
        f"import pytest\n\n\n@pytest.mark.convergence({marker})\n"
        "def test_it(convergence_train, convergence_dtype):\n    pass\n"
    )


def case_module(changes: str) -> str:
    return f"from cases import seed\n\ncase = seed({changes})\n\n\ndef test_it():\n    pass\n"


def training_test(body: str, dtypes: str = '["float32"]', imports: str = "", name: str = "test_it") -> str:
    body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return (
        f"import pytest\nfrom cases import seed\n{imports}\n\n"
        f"@pytest.mark.convergence(dtypes={dtypes})\n"
        f"def {name}(convergence_train, convergence_dtype):\n{body}\n"
    )


def snapshot_test(name: str) -> str:
    return (
        "import pytest\nfrom cases import seed\n\n\n"
        '@pytest.mark.convergence(dtypes=["float32"])\n'
        f"def test_{name}(convergence_train, convergence_snapshot):\n"
        "    assert convergence_train(seed()) == convergence_snapshot\n"
    )


def results_document(*runs: dict[str, object], tensorflow: str = "2.21.0") -> str:
    """A results file as pytest --convergence-results writes it (schema 1), with hand-made runs."""
    versions = {"tensorflow": tensorflow, "keras": "3.15.1", "python": "3.11.7"}
    return json.dumps(
        {
            "schema": 1,
            "created": "2026-01-01T00:00:00+00:00",
            "machine": {},
            "versions": versions,
            "runs": [{**run, "versions": versions} for run in runs],
        },
        indent=1,
    )


def run_record(case: str = "seed", dtype: str = "float32") -> dict[str, object]:
    return {
        "case": case,
        "dtype": dtype,
        "engine": "loop",
        "test": f"test_it.py::test_it[{dtype}]",
        "status": "passed",
        "outcome": "descending",
        "evidence": {},
        "final_loss": 0.07,
        "steps": 20,
        "target_loss": None,
        "steps_to_target": None,
        "converged": None,
        "expectation_met": None,
        "expectation_problems": [],
        "checkpoint_steps": [10, 20],
        "checkpoint_losses": [0.2, 0.07],
        "steps_per_second": 100.0,
        "wall_times": [0.2],
        "loss_dtype": "float32",
        "variable_dtype": "float32",
    }


def module(name: str) -> str:
    return f"test_{name.replace('-', '_')}.py"


VALID = results_document(run_record())
OTHER = results_document(run_record("other"))
ONE_TEST = {"test_one.py": training_test("convergence_train(seed())")}
SEED_SPEC = {"seed.convergence.toml": spec()}
SNAPSHOT = "__snapshots__/test_snap/test_{}[float32].convergence.txt"
LONG_TEST = textwrap.dedent(
    """\
    import pytest
    from cases import seed


    @pytest.mark.convergence(dtypes=["float16", "float32", "float64"])
    def test_long(convergence_train, convergence_dtype, convergence_snapshot):
        steps = 20 if convergence_dtype == "float16" else 40000  # float16 ends; float32 is cut short
        assert convergence_train(seed(steps=steps)) == convergence_snapshot
    """
)
COMMITTED = {
    **{
        f"__snapshots__/test_long/test_long[{d}].convergence.txt": (
            f"pytest-convergence snapshot v1\n# {d}: reviewed, committed\n"
        )
        for d in ("float16", "float32", "float64")
    },
    "results.json": VALID,
}
INTERRUPTED = (
    "convergence: the session was interrupted (KeyboardInterrupt), so it deleted no snapshot (those of "
    "tests that did not run are kept), did not write results.json (the file there is unchanged)"
)
INTERRUPTED_AFTER_A_RUN = (
    "convergence: the session was interrupted (KeyboardInterrupt), so it deleted no snapshot (those of "
    "tests that did not run are kept), wrote the 1 run(s) that finished to results.json, marked "
    "unfinished: it names the 2 planned test(s) that have no result"
)
UPDATE_WITH_RESULTS = ("python", "-m", "pytest", "--convergence", "--snapshot-update")
UPDATE_WITH_RESULTS += ("--convergence-results=results.json", "-v")

# ------------------------------------------------------------------------------ the inputs
MARKERS = [
    BadInput(
        name,
        "marker",
        mistake,
        {module(name): marker_test(marker)},
        ("pytest", "--convergence"),
        message,
        exit_code=2,
    )
    for name, mistake, marker, message in [
        (
            "marker-dtypes-string",
            'dtypes="float16" (a string, not a list)',
            'dtypes="float16"',
            "field 'test_it dtypes': dtypes takes a list of dtype names, got the string 'float16'",
        ),
        (
            "marker-dtype-alias-fp16",
            'dtypes=["fp16"]',
            'dtypes=["fp16"]',
            "field 'test_it dtypes': unknown dtype 'fp16'; valid dtypes are: float16, bfloat16, float32, "
            f"float64, {DTYPES}; did you mean 'float16'?",
        ),
        (
            "marker-dtype-alias-half",
            'dtypes=["float32", "half"]',
            'dtypes=["float32", "half"]',
            "field 'test_it dtypes': unknown dtype 'half'; valid dtypes are: float16, bfloat16, float32, "
            f"float64, {DTYPES}; did you mean 'float16'?",
        ),
        (
            "marker-dtype-unknown",
            'dtypes=["float8"]',
            'dtypes=["float8"]',
            "field 'test_it dtypes': unknown dtype 'float8'; valid dtypes are: float16, bfloat16, float32, "
            f"float64, {DTYPES}",
        ),
        (
            "marker-dtypes-empty",
            "dtypes=[]",
            "dtypes=[]",
            "field 'test_it dtypes': the list of dtypes is empty",
        ),
        (
            "marker-positional",
            '@pytest.mark.convergence("float16")',
            '"float16"',
            "field 'test_it': the convergence marker takes keywords only",
        ),
        (
            "marker-unknown-keyword",
            'dtype=["float16"] (singular)',
            'dtype=["float16"]',
            "field 'test_it': unknown keyword(s) dtype in @pytest.mark.convergence; valid keywords are: "
            "dtypes, engine, tolerance, backends",
        ),
        (
            "marker-engine",
            'engine="jit"',
            'dtypes=["float32"], engine="jit"',
            "field 'test_it engine': unknown engine 'jit'; valid engines are: loop, xla, fit",
        ),
        (
            "marker-tolerance-key",
            'tolerance={"rtl": 0.1}',
            'dtypes=["float32"], tolerance={"rtl": 0.1}',
            "dtype float32, field '@pytest.mark.convergence(tolerance=...)': unknown tolerance key(s) rtl; "
            "valid keys are: rtol, event_rtol, event_atol, miss_fraction, exact",
        ),
    ]
]

CASE_ERROR = "pytest_convergence.errors.CaseError: case 'seed', "
CASES = [
    BadInput(
        name,
        "case",
        mistake,
        {module(name): case_module(changes)},
        ("pytest", "--convergence"),
        CASE_ERROR + message,
        exit_code=2,
    )
    for name, mistake, changes, message in [
        ("case-steps-zero", "steps=0", "steps=0", "field 'steps': must be a positive integer, got 0"),
        (
            "case-steps-and-epochs",
            "steps and epochs both",
            "epochs=3",
            "field 'steps': give exactly one of steps (optimizer steps) or epochs (passes over the data)",
        ),
        (
            "case-xy-lengths",
            "y longer than x",
            "y=[1.0, 0.0, 1.0]",
            "field 'y': x has 2 samples but y has 3; they must have the same length",
        ),
        (
            "case-x-nan",
            "x holding NaN",
            'x=[[float("nan")], [1.0]]',
            "field 'x': contains 1 NaN or Inf value(s); training on them makes the loss NaN from the first "
            "step",
        ),
        (
            "case-loss-dict",
            "a loss dict without class_name",
            'loss={"from_logits": True}',
            'field \'loss\': a loss config is a dict like {"class_name": "...", "config": {...}}',
        ),
        (
            "case-expect-dtype-alias",
            'expectations={"half": ...}',
            'expectations={"half": {"converged": True}}',
            "field 'expectations.half': unknown dtype 'half'; valid dtypes are: float16, bfloat16, float32, "
            f"float64, {DTYPES}; did you mean 'float16'?",
        ),
        (
            "case-expect-outcome-converged",
            'outcome="converged"',
            'expectations={"float32": {"outcome": "converged"}}',
            "field 'expectations.float32.outcome': 'converged' is not an outcome but whether the target "
            "was met",
        ),
        (
            "case-engine",
            'engine="jit"',
            'engine="jit"',
            "field 'engine': unknown engine 'jit'; valid engines are: loop, xla, fit",
        ),
        (
            "case-validation-split",
            "validation_split=1.5",
            "validation_split=1.5",
            "field 'validation_split': must be a fraction between 0 and 1 that leaves samples on both "
            "sides, got 1.5 for 2 samples",
        ),
        (
            "case-unknown-field",
            'dtypes=["float16"] given to the case',
            'dtypes=["float16"]',
            "field 'dtypes': a case has no dtype: the same case trains in every dtype its test or spec file "
            "lists",
        ),
        (
            "case-layers-strings",
            'layers=["Dense"]',
            'layers=["Dense"]',
            'field \'layers[0]\': each layer is a dict like {"class_name": "Dense", "config": {"units": 1}}',
        ),
        (
            "case-loss-dtype-alias",
            'loss_dtype="fp32"',
            'loss_dtype="fp32"',
            "field 'loss_dtype': unknown loss dtype 'fp32' (did you mean 'float32'?)",
        ),
        ("case-seed-float", "seed=0.5", "seed=0.5", "field 'seed': seed must be an integer, got 0.5"),
    ]
]

SPECS = [
    BadInput(
        name,
        "spec",
        mistake,
        {f"{name}.convergence.toml": text},
        ("pytest", "--convergence"),
        f"{name}.convergence.toml: {message}",
        exit_code=1,  # (a Python module's collection error exits 2)
        keras_says=keras_says,
    )
    for name, mistake, text, message, keras_says in [
        (
            "spec-toml-syntax",
            "a TOML syntax error",
            "steps = 20\n[model\ninput_shape = [1]\n",
            "TOML syntax error: Expected ']' at the end of a table declaration (at line 2, column 7)",
            "",
        ),
        (
            "spec-unknown-key",
            "stesp = 20 (misspelt)",
            spec('dtypes = ["float32"]\nstesp = 20'),
            "stesp: unknown key 'stesp' (did you mean 'steps'?); valid keys: name, description, dtypes, "
            "engine, steps, epochs, batch_size, shuffle, seed, target_loss, loss_dtype, metrics, "
            "callbacks, loss_weights, "
            "allow_dtype_mismatch, initial_weights, model, loss, optimizer, data, validation_data, "
            "validation_split, expect, tolerance",
            "",
        ),
        (
            "spec-dtypes-string",
            'dtypes = "float16"',
            spec('dtypes = "float16"\nsteps = 20'),
            "dtypes: expected a list, got str 'float16'; write it as a list: dtypes = [\"float16\"]",
            "",
        ),
        (
            "spec-dtype-alias",
            'dtypes = ["bf16"]',
            spec('dtypes = ["bf16"]\nsteps = 20'),
            f"dtypes[0]: 'bf16' is not one of: float16, bfloat16, float32, float64, {DTYPES} (did you mean "
            "'bfloat16'?)",
            "",
        ),
        ("spec-no-loss", "no [loss]", spec(loss=""), "loss: is required", ""),
        (
            "spec-no-budget",
            "neither steps nor epochs",
            spec('dtypes = ["float32"]'),
            "steps: give steps (optimizer steps) or epochs (passes over the data)",
            "",
        ),
        (
            "spec-steps-negative",
            "steps = -5",
            spec('dtypes = ["float32"]\nsteps = -5'),
            "steps: must be greater than 0, got -5",
            "",
        ),
        (
            "spec-layer-class",
            'class_name = "Dens"',
            spec(model=SPEC_MODEL.replace('"Dense"', '"Dens"')),
            "model.layers[0].class_name: Keras has no layer class 'Dens' (did you mean 'Dense'?)",
            "",
        ),
        (
            "spec-layer-config",
            "units = 0",
            spec(model=SPEC_MODEL.replace("units = 1", "units = 0")),
            "model.layers[0].config: Keras rejects this config: ",
            "Error when deserializing class 'Dense' using config={'units': 0, 'quantization_config': None}. "
            "Received an invalid value for `units`, expected a positive integer. Received: units=0",
        ),
        (
            "spec-optimizer-name",
            'optimizer = "adamm"',
            spec('dtypes = ["float32"]\nsteps = 20\noptimizer = "adamm"', optimizer=""),
            "optimizer: Keras does not know the optimizer 'adamm' (did you mean 'adam'?)",
            "",
        ),
        (
            "spec-learning-rate-text",
            'learning_rate = "fast"',
            spec(optimizer=SPEC_OPTIMIZER.replace("0.1", '"fast"')),
            "optimizer.config: Keras rejects this config: ",
            "Argument `learning_rate` should be float, or an instance of LearningRateSchedule, or a "
            "callable (that takes in the current iteration value and returns the corresponding learning "
            "rate value). Received instead: learning_rate=fast",
        ),
        (
            "spec-generator",
            'generator = "two_moon"',
            spec(data='\n[data]\ngenerator = "two_moon"\nsamples = 64\n'),
            "data.generator: 'two_moon' is not one of: xor, two_moons, circles, spirals, blobs, "
            "linear_regression, class_templates, token_labels, sentiment (did you mean 'two_moons'?)",
            "",
        ),
        (
            "spec-npz-missing",
            'npz = "data.npz" not there',
            spec(data='\n[data]\nnpz = "data.npz"\n'),
            "data.npz: file not found: data.npz (paths are relative to the spec file)",
            "",
        ),
        (
            "spec-expect-not-in-dtypes",
            '[expect.float16] with dtypes = ["float32"]',
            spec(footer="\n[expect.float16]\nconverged = true\n"),
            "expect.float16: an expectation for float16, which is not in dtypes (float32); add float16 to "
            "dtypes or remove expect.float16",
            "",
        ),
        (
            "spec-expect-alias",
            "[expect.half]",
            spec('dtypes = ["float16"]\nsteps = 20', footer="\n[expect.half]\nconverged = true\n"),
            f"expect.half: 'half' is not one of: float16, bfloat16, float32, float64, {DTYPES}, jax, torch "
            "(did you mean 'float16'?)",
            "",
        ),
        (
            "spec-builder-import",
            'builder = "nomodule:build"',
            spec(model='\n[model]\nbuilder = "nomodule:build"\n'),
            "model.builder: cannot import 'nomodule': No module named 'nomodule'",
            "",
        ),
        (
            "spec-metrics-string",
            'metrics = "accuracy"',
            spec('dtypes = ["float32"]\nsteps = 20\nmetrics = "accuracy"'),
            "metrics: expected a list, got str 'accuracy'; write it as a list: metrics = [\"accuracy\"]",
            "",
        ),
        (
            "spec-data-misfit",
            "samples of 3 values for input_shape [1]",
            spec(data="\n[data]\nx = [[-1.0, 0.0, 2.0], [1.0, 0.0, 2.0]]\ny = [1.0, 0.0]\n"),
            "data.x: data of shape (2, 3) does not fit the model's input: ",
            "in layer 'Sequential': Input 0 with name 'None' of layer 'dense_1' is incompatible with the "
            "layer: expected axis -1 of input shape to have value 1, but received input with shape (2, 3)",
        ),
        (
            "spec-y-misfit",
            "y of 2 values per sample for 1 output",
            spec(data="\n[data]\nx = [[-1.0], [1.0]]\ny = [[1.0, 0.0], [0.0, 1.0]]\n"),
            "data.y: y has 2 values per sample but the model outputs 1",
            "",
        ),
    ]
]

FLOAT32_ALWAYS = """\
import keras


def float32_always(dtype):
    # ignores the dtype it is asked for: a float32 model whatever the policy
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, dtype="float32")])
"""
IGNORES_DTYPE = (
    "layer 'dense' has float32 variables (dense/kernel) and float32 computation, but float16 means "
    "float16 variables and float16 computation (1 of 1 layers with weights differ): the model builder did "
    "not build it under the dtype policy it was called with, so the summary and the snapshot would say "
    "float16 of a model that trained otherwise"
)
VALID_EXPECTATIONS = "converged, outcome, final_loss_below, steps_to_target_at_most, metrics, raises"
KERAS = [
    BadInput(
        "spec-builder-ignores-dtype",
        "keras",
        "a spec's builder returning a float32 model for float16",
        {
            "builders.py": FLOAT32_ALWAYS,
            "builder-ignores-dtype.convergence.toml": 'dtypes = ["float16"]\nsteps = 20\n\n[model]\n'
            'builder = "builders:float32_always"\n' + SPEC_LOSS + SPEC_OPTIMIZER + SPEC_DATA,
        },
        ("pytest", "--convergence", "-rN"),
        f"case 'builder-ignores-dtype', dtype float16, field 'model': {IGNORES_DTYPE}",
        exit_code=1,
    ),
] + [
    BadInput(
        name,
        "keras",
        mistake,
        {module(name): source.replace("def test_it(", f"def {module(name)[:-3]}(")},
        ("pytest", "--convergence", "-rN"),
        message,
        exit_code=1,
        keras_says=keras_says,
    )
    for name, mistake, source, message, keras_says in [
        (
            "keras-optimizer-is-loss",
            "optimizer=keras.losses.MeanSquaredError()",
            training_test(
                "convergence_train(seed(optimizer=keras.losses.MeanSquaredError()))", imports="import keras"
            ),
            "case 'seed', dtype float32, field 'optimizer': expected an optimizer, got a MeanSquaredError (",
            "keras.src.losses.losses), which is a loss",
        ),
        (
            "keras-loss-is-optimizer",
            "loss=keras.optimizers.SGD()",
            training_test("convergence_train(seed(loss=keras.optimizers.SGD()))", imports="import keras"),
            "case 'seed', dtype float32, field 'loss': expected a loss, got a SGD (",
            "keras.src.optimizers.sgd), which is an optimizer",
        ),
        (
            "keras-x-misfit",
            "x with 3 values per sample, input_shape=(1,)",
            training_test("convergence_train(seed(x=[[-1.0, 0.0, 2.0], [1.0, 0.0, 2.0]]))"),
            "case 'seed', dtype float32, field 'x': x has samples of shape [3], but the model's input takes "
            "samples of shape [1]",
            "",
        ),
        (
            "keras-builder-ignores-dtype",
            "a builder returning a float32 model for float16",
            training_test(
                """
             def build(dtype):
                 return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, dtype="float32")])

             convergence_train(seed(layers=[{"class_name": "Dense"}], input_shape=(1,)).with_(model=build))
             """,
                dtypes='["float16"]',
                imports="import keras",
            ),
            f"case 'seed', dtype float16, field 'model': {IGNORES_DTYPE}",
            "",
        ),
        (
            "keras-builder-returns-none",
            "a builder returning None",
            training_test("convergence_train(seed().with_(model=lambda dtype: None))"),
            "case 'seed', dtype float32, field 'model': the model builder must return a keras.Model, got "
            "NoneType",
            "",
        ),
        (
            "keras-initial-weights",
            "initial_weights of the wrong shape",
            training_test("convergence_train(seed(initial_weights=[[[0.0], [0.0]], [0.0]]))"),
            "case 'seed', dtype float32, field 'initial_weights[0]': weight 0 has shape (2, 1), the model's "
            "has (1, 1)",
            "",
        ),
        (
            "keras-metric-unknown",
            'metrics=["acuracy"]',
            training_test('convergence_train(seed(metrics=["acuracy"]))'),
            "case 'seed', dtype float32, field 'metrics[0]': Keras does not know the metric 'acuracy' (did "
            "you mean 'accuracy'?)",
            "",
        ),
        (
            "keras-loss-unknown",
            'loss="mean_squared_eror"',
            training_test('convergence_train(seed(loss="mean_squared_eror"))'),
            "case 'seed', dtype float32, field 'loss': Keras does not know this loss: ",
            "Could not interpret loss identifier: mean_squared_eror",
        ),
        (
            "keras-layer-config",
            '{"class_name": "Dense", "config": {"unit": 1}}',
            training_test('convergence_train(seed(layers=[{"class_name": "Dense", "config": {"unit": 1}}]))'),
            "case 'seed', dtype float32, field 'model': Keras could not build the model config: ",
            "TypeError: Error when deserializing class 'Dense' using config={'unit': 1, "
            "'quantization_config': None}. Dense.__init__() missing 1 required positional argument: 'units'",
        ),
        (
            "keras-loss-inf",
            "x so large the first loss is inf",
            training_test('convergence_train(seed(x=[[1e30], [-1e30]], loss="mse"))'),
            "case 'seed', dtype float32, field 'loss': the loss is inf at the very first step, before any "
            "update: the model, the loss or the data produce it, not the training",
            "",
        ),
        (
            "keras-dtype-without-marker",
            "convergence_dtype without a marker",
            "def test_it(convergence_dtype):\n    pass\n",
            "test_keras_dtype_without_marker uses convergence_dtype but has no "
            "@pytest.mark.convergence(dtypes=[...])",
            "",
        ),
        (
            "keras-expect-keyword",
            "run.expect(final_loss=1e-3)",
            training_test("convergence_train(seed()).expect(final_loss=1e-3)"),
            "pytest_convergence.errors.CaseError: field 'expectation': unknown expectation keyword(s) "
            f"final_loss; valid ones are: {VALID_EXPECTATIONS}",
            "",
        ),
        (
            "keras-expect-outcome",
            'run.expect(outcome="stalling")',
            training_test('convergence_train(seed()).expect(outcome="stalling")'),
            "pytest_convergence.errors.CaseError: field 'outcome': unknown outcome 'stalling'; valid "
            "outcomes are: reached-zero, stalled, oscillating, plateau, diverged, descending",
            "",
        ),
        (
            "keras-train-dtype-alias",
            'convergence_train(case, dtype="fp16")',
            training_test('convergence_train(seed(), dtype="fp16")'),
            "field 'dtype': unknown dtype 'fp16'; valid dtypes are: float16, bfloat16, float32, float64, "
            f"{DTYPES}; did you mean 'float16'?",
            "",
        ),
    ]
]

TRUNCATED = (
    "pytest-convergence snapshot v1\ncase: seed\ndtype: float32\nloss at 20 checkpoints (step loss):\n1 0.72"
)
SNAPSHOTS = [
    BadInput(
        f"snapshot-{name.replace('_', '-')}",
        "snapshot",
        mistake,
        {"test_snap.py": snapshot_test(name)}
        | ({SNAPSHOT.format(name): content} if content is not None else {}),
        ("pytest", "--convergence"),
        message,
        exit_code=1,
    )
    for name, mistake, content, message in [
        (
            "garbage",
            "a snapshot file holding other text",
            "hello, I am not a snapshot\n",
            f"{SNAPSHOT.format('garbage')}: not a pytest-convergence snapshot: the first line is "
            "'hello, I am not a snapshot'",
        ),
        (
            "truncated",
            "a snapshot file cut in half",
            TRUNCATED,
            f"{SNAPSHOT.format('truncated')}: the snapshot is truncated: its last line is not 'end'",
        ),
        (
            "other_format",
            "a snapshot in syrupy's amber format",
            "# serializer version: 1\n# name: test_other_format\n  list([\n    0.5,\n  ])\n# ---\n",
            f"{SNAPSHOT.format('other_format')}: not a pytest-convergence snapshot: the first line is "
            "'# serializer version: 1'",
        ),
        (
            "empty",
            "an empty snapshot file",
            "",
            f"{SNAPSHOT.format('empty')}: not a pytest-convergence snapshot: the first line is "
            "'(empty file)'",
        ),
        (
            "binary",
            "a binary file as the snapshot",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
            f"{SNAPSHOT.format('binary')}: not a pytest-convergence snapshot: not UTF-8 text (byte 0: "
            "invalid start byte)",
        ),
        (
            "missing",
            "no snapshot yet (the first run)",
            None,
            "pytest_convergence.errors.SnapshotMismatchError: Snapshot 'test_missing[float32]' "
            "does not exist!",
        ),
    ]
] + [
    BadInput(
        "snapshot-dir-unwritable",
        "snapshot",
        "__snapshots__ is a file: no directory can be made there",
        {
            "test_one.py": training_test("assert convergence_train(seed()) == convergence_snapshot").replace(
                "convergence_dtype)", "convergence_snapshot)"
            ),
            "__snapshots__": "a file where the snapshot directory belongs\n",
        },
        ("pytest", "--convergence", "--snapshot-update"),
        "ERROR: --snapshot-update: cannot write the snapshots of test_one.py::test_it[float32]: "
        "__snapshots__ is a file, not a directory, so nothing can be written under it",
        exit_code=4,
    )
]

REGENERATE = "regenerate it with pytest --convergence --convergence-results=old.json"
RESULTS = [
    BadInput(
        name,
        "results",
        mistake,
        ONE_TEST | files,
        ("pytest", "--convergence", *args),
        "ERROR: " + message,
        exit_code=4,
    )
    for name, mistake, files, args, message in [
        (
            "baseline-missing",
            "--convergence-baseline=old.json, no such file",
            {},
            ["--convergence-baseline=old.json"],
            "--convergence-baseline: old.json: no such file; the baseline is the results file of a session "
            "on the old framework: make it with pytest --convergence --convergence-results=old.json on the "
            "old framework, or fix the path",
        ),
        (
            "baseline-empty",
            "an empty baseline file",
            {"old.json": ""},
            ["--convergence-baseline=old.json"],
            f"--convergence-baseline: old.json: the file is empty, not a results file; {REGENERATE} on the "
            "old framework",
        ),
        (
            "baseline-truncated",
            "a baseline cut short",
            {"old.json": VALID[: len(VALID) // 2]},
            ["--convergence-baseline=old.json"],
            "--convergence-baseline: old.json: not valid JSON at line 22, column 4 (Unterminated string "
            f"starting at): the file is truncated or not a results file; {REGENERATE}",
        ),
        (
            "baseline-other-schema",
            "a baseline of results schema 99",
            {"old.json": '{"schema": 99, "runs": []}'},
            ["--convergence-baseline=old.json"],
            "--convergence-baseline: old.json: results schema 99, but this version of pytest-convergence "
            f"reads schema 1; {REGENERATE} with this version",
        ),
        (
            "baseline-not-results",
            "a snapshot given as the baseline",
            {"old.json": "pytest-convergence snapshot v1\ncase: seed\n"},
            ["--convergence-baseline=old.json"],
            "--convergence-baseline: old.json: not valid JSON at line 1, column 1 (Expecting value): the "
            f"file is truncated or not a results file; {REGENERATE}",
        ),
        (
            "baseline-is-a-directory",
            "a directory given as the baseline",
            {"old.json/keep": ""},
            ["--convergence-baseline=old.json"],
            "--convergence-baseline: old.json is a directory; give the results file (a .json) inside it",
        ),
        (
            "results-is-baseline",
            "--convergence-results and --convergence-baseline the same file",
            {"results.json": VALID},
            ["--convergence-results=results.json", "--convergence-baseline=results.json"],
            "--convergence-results and --convergence-baseline name the same file (results.json): the "
            "results would overwrite the baseline before the gate reads it, and every run would be "
            "compared with itself",
        ),
        (
            "results-unwritable",
            "--convergence-results under a path that is a file",
            {"out": "a file\n"},
            ["--convergence-results=out/results.json"],
            "--convergence-results=out/results.json: cannot write the results file: out is a file, not a "
            "directory, so nothing can be written under it",
        ),
    ]
]

OPTIONS = [
    BadInput(
        name,
        "option",
        mistake,
        ONE_TEST | ({"pytest.ini": f"[pytest]\n{ini}\n"} if ini else {}),
        (*(("python", "-m") if message.startswith("python -m") else ()), "pytest", "--convergence", *args),
        message,
        exit_code=4,
    )
    for name, mistake, ini, args, message in [
        (
            "option-dtypes-alias",
            "--convergence-dtypes=fp16",
            "",
            ["--convergence-dtypes=fp16"],
            "ERROR: field '--convergence-dtypes': unknown dtype 'fp16'; valid dtypes are: float16, bfloat16, "
            f"float32, float64, {DTYPES}; did you mean 'float16'?",
        ),
        (
            "option-dtypes-unknown",
            "--convergence-dtypes=float16,int8",
            "",
            ["--convergence-dtypes=float16,int8"],
            "ERROR: field '--convergence-dtypes': unknown dtype 'int8'; valid dtypes are: float16, bfloat16, "
            f"float32, float64, {DTYPES}",
        ),
        (
            "option-repeat-zero",
            "--convergence-repeat=0",
            "",
            ["--convergence-repeat=0"],
            "ERROR: --convergence-repeat must be at least 1, got 0",
        ),
        (
            "option-calibrate-one",
            "--convergence-calibrate=1",
            "",
            ["--convergence-calibrate=1"],
            "ERROR: --convergence-calibrate needs at least 2 runs to measure a spread, got 1",
        ),
        (  # argparse names the program: a process of its own, as a user starts it
            "option-engine",
            "--convergence-engine=jit",
            "",
            ["--convergence-engine=jit"],
            "python -m pytest: error: argument --convergence-engine: invalid choice: 'jit' (choose from "
            "'loop', 'xla', 'fit')",
        ),
        (
            "option-repeat-text",
            "--convergence-repeat=twice",
            "",
            ["--convergence-repeat=twice"],
            "python -m pytest: error: argument --convergence-repeat: invalid int value: 'twice'",
        ),
        (
            "option-simulate-update",
            "--convergence-simulate-machine=1 with --snapshot-update",
            "",
            ["--convergence-simulate-machine=1", "--snapshot-update"],
            "ERROR: --convergence-simulate-machine trains as another machine might: its histories are a "
            "check, not snapshots; drop --snapshot-update (or the simulation)",
        ),
        (
            "option-kernels-unknown",
            "--convergence-kernels=avx3",
            "",
            ["--convergence-kernels=avx3"],
            "ERROR: --convergence-kernels: unknown kernel variant 'avx3'",
        ),
        (
            "option-kernels-update",
            "--convergence-kernels=sse41 with --snapshot-update",
            "",
            ["--convergence-kernels=sse41", "--snapshot-update"],
            "ERROR: --convergence-kernels=sse41 trains with another CPU's kernels: its histories are a "
            "check, not snapshots; drop --snapshot-update (or the kernel variant)",
        ),
        (
            "option-calibrate-with-missing",
            "--convergence-calibrate-with naming no file",
            "",
            ["--convergence-calibrate-with=kernels/*.json"],
            "ERROR: --convergence-calibrate-with: no results file matches 'kernels/*.json'",
        ),
        (
            "option-tf32",
            "--convergence-tf32=maybe",
            "",
            ["--convergence-tf32=maybe"],
            "ERROR: --convergence-tf32 must be on or off, got 'maybe'",
        ),
        (
            "ini-speed",
            "convergence_speed = slow",
            "convergence_speed = slow",
            [],
            "ERROR: ini convergence_speed must be one of warn, fail, off, got 'slow'",
        ),
        (
            "ini-engine",
            "convergence_engine = jit",
            "convergence_engine = jit",
            [],
            "ERROR: field 'ini convergence_engine': unknown engine 'jit'; valid engines are: loop, xla, fit",
        ),
        (
            "ini-tf32",
            "convergence_tf32 = yes",
            "convergence_tf32 = yes",
            [],
            "ERROR: ini convergence_tf32 must be on or off, got 'yes'",
        ),
        (
            "ini-rtol",
            "convergence_rtol = float16=abc",
            "convergence_rtol = float16=abc",
            [],
            "ERROR: field 'ini convergence_rtol': cannot read 'float16=abc'; write one number, or "
            "dtype=number pairs like 'float16=0.02 float32=1e-5'",
        ),
        (
            "ini-dtypes-alias",
            "convergence_dtypes = half,float32",
            "convergence_dtypes = half,float32",
            [],
            "ERROR: field 'ini convergence_dtypes': unknown dtype 'half'; valid dtypes are: float16, "
            f"bfloat16, float32, float64, {DTYPES}; did you mean 'float16'?",
        ),
        (
            "ini-min-time",
            "convergence_speed_min_time = fast",
            "convergence_speed_min_time = fast",
            [],
            "ERROR: ini convergence_speed_min_time must be a number of seconds, got 'fast'",
        ),
    ]
]

CLI = [
    BadInput(
        name,
        "cli",
        mistake,
        files,
        ("pytest-convergence", *args),
        message,
        exit_code=0 if message.startswith(("note:", "warning:")) else 2,  # a note or warning, and it goes on
    )
    for name, mistake, files, args, message in [
        (
            "cli-no-command",
            "pytest-convergence",
            {},
            [],
            "pytest-convergence: error: the following arguments are required: COMMAND",
        ),
        (
            "cli-unknown-command",
            "pytest-convergence explian seed.convergence.toml",
            SEED_SPEC,
            ["explian", "seed.convergence.toml"],
            "pytest-convergence: error: argument COMMAND: invalid choice: 'explian' (choose from 'explain', "
            "'compare', 'replay-plan', 'replay', 'merge', 'gate', 'bisect', 'history', 'kernels')",
        ),
        (
            "cli-explain-missing",
            "explain missing.convergence.toml",
            {},
            ["explain", "missing.convergence.toml"],
            "error: missing.convergence.toml: cannot read the file: no such file; give the path of a spec "
            "file (*.convergence.toml)",
        ),
        (
            "cli-explain-not-toml",
            "explain notes.txt (not TOML)",
            {"notes.txt": "just some notes\n"},
            ["explain", "notes.txt"],
            "error: notes.txt: TOML syntax error: Expected '=' after a key in a key/value pair (at line 1, "
            "column 6)",
        ),
        (
            "cli-explain-dtype-alias",
            "explain SPEC --dtype fp16",
            SEED_SPEC,
            ["explain", "seed.convergence.toml", "--dtype", "fp16"],
            "error: field '--dtype': unknown dtype 'fp16'; valid dtypes are: float16, bfloat16, float32, "
            f"float64, {DTYPES}; did you mean 'float16'?",
        ),
        (
            "cli-explain-dtype-not-in-spec",
            "explain SPEC --dtype bfloat16, the spec lists float32",
            SEED_SPEC,
            ["explain", "seed.convergence.toml", "--dtype", "bfloat16", "--steps", "5"],
            "note: seed.convergence.toml lists dtypes float32, not bfloat16; training bfloat16 anyway, as "
            "asked (no expectation of the spec applies to it)",
        ),
        (
            "cli-explain-plot-unwritable",
            "explain SPEC --plot out/loss.png where out is a file",
            SEED_SPEC | {"out": "a file\n"},
            ["explain", "seed.convergence.toml", "--plot", "out/loss.png"],
            "error: --plot out/loss.png: cannot write the picture: out is a file, not a directory, so "
            "nothing can be written under it; fix: give a .png file path in a directory you can write to",
        ),
        (
            "cli-explain-steps-zero",
            "explain SPEC --steps 0",
            SEED_SPEC,
            ["explain", "seed.convergence.toml", "--steps", "0"],
            "error: case 'seed', field 'steps': must be a positive integer, got 0",
        ),
        (
            "cli-explain-engine",
            "explain SPEC --engine jit",
            SEED_SPEC,
            ["explain", "seed.convergence.toml", "--engine", "jit"],
            "pytest-convergence explain: error: argument --engine: invalid choice: 'jit' (choose from "
            "'loop', 'xla', 'fit')",
        ),
        (
            "cli-compare-same-file",
            "compare a.json a.json",
            {"a.json": VALID},
            ["compare", "a.json", "a.json"],
            "error: compare a.json a.json: OLD and NEW are the same file, so every run would be compared "
            "with itself and pass whatever changed",
        ),
        (
            "cli-compare-copies",
            "compare a.json b.json, b a copy of a",
            {"a.json": VALID, "b.json": VALID},
            ["compare", "a.json", "b.json"],
            "warning: a.json and b.json have the same contents, so every run is compared with itself and "
            "passes; is one a copy of the other? Give the old framework's results first and the new "
            "framework's second",
        ),
        (
            "cli-compare-missing",
            "compare old.json new.json, no old.json",
            {"new.json": VALID},
            ["compare", "old.json", "new.json"],
            "error: old.json: cannot read the results file: no such file; make it with pytest --convergence "
            "--convergence-results=old.json, or fix the path",
        ),
        (
            "cli-compare-truncated",
            "compare with a truncated file",
            {"old.json": VALID, "new.json": VALID[:200]},
            ["compare", "old.json", "new.json"],
            "error: new.json: not valid JSON at line 13, column 4 (Unterminated string starting at): the "
            "file is truncated or not a results file; regenerate it with pytest --convergence "
            "--convergence-results=new.json",
        ),
        (
            "cli-compare-plot-unknown",
            "compare --plot 'seeed[float32]' x.png",
            {"a.json": VALID, "b.json": VALID + "\n"},
            ["compare", "a.json", "b.json", "--plot", "seeed[float32]", "x.png"],
            "error: --plot seeed[float32]: no such case and dtype in both results; try one of: seed[float32]",
        ),
        (
            "cli-compare-threshold-text",
            "compare --final-loss-threshold ten",
            {"a.json": VALID, "b.json": VALID},
            ["compare", "a.json", "b.json", "--final-loss-threshold", "ten"],
            "pytest-convergence compare: error: argument --final-loss-threshold: 'ten' is not a number",
        ),
        (
            "cli-compare-threshold-negative",
            "compare --final-loss-threshold -0.1",
            {"a.json": VALID, "b.json": VALID + "\n"},
            ["compare", "a.json", "b.json", "--final-loss-threshold", "-0.1"],
            "pytest-convergence compare: error: argument --final-loss-threshold: must be a number >= 0, got "
            "-0.1",
        ),
        (
            "cli-merge-output-last",
            "merge job1.json job2.json all.json (output last)",
            {"job1.json": VALID, "job2.json": OTHER},
            ["merge", "job1.json", "job2.json", "all.json"],
            "error: merge: all.json does not exist, and job1.json, the first argument, is an existing file "
            "that merge would overwrite: merge takes the output first, then the files to merge",
        ),
        (
            "cli-merge-into-input",
            "merge job1.json job1.json job2.json",
            {"job1.json": VALID, "job2.json": OTHER},
            ["merge", "job1.json", "job1.json", "job2.json"],
            "error: merge: job1.json is both the output (the first argument, which merge writes) and an "
            "input",
        ),
        (
            "cli-merge-versions",
            "merge of TensorFlow 2.21.0 and 2.19.0 results",
            {"job1.json": VALID, "job2.json": results_document(run_record("other"), tensorflow="2.19.0")},
            ["merge", "all.json", "job1.json", "job2.json"],
            "error: job2.json: tensorflow 2.19.0, but another file has tensorflow 2.21.0: results of "
            "different framework versions are compared with `pytest-convergence compare`, not merged",
        ),
        (
            "cli-gate-one-version",
            "gate 2.19.0 (NEW missing)",
            {},
            ["gate", "2.19.0"],
            "pytest-convergence gate: error: the following arguments are required: new",
        ),
    ]
]

INTERRUPTS = [
    BadInput(
        "interrupt-startup",
        "interrupt",
        "Ctrl-C while collecting (TensorFlow importing)",
        {"test_long.py": LONG_TEST, **COMMITTED},
        UPDATE_WITH_RESULTS,
        INTERRUPTED,
        exit_code=2,
        interrupt=("^collecting", 0.2),
        kept=tuple(COMMITTED),
    ),
    BadInput(
        "interrupt-training",
        "interrupt",
        "Ctrl-C while the second dtype trains",
        {"test_long.py": LONG_TEST, **COMMITTED},
        UPDATE_WITH_RESULTS,
        INTERRUPTED_AFTER_A_RUN,
        exit_code=2,
        interrupt=(r"test_long\[float16\] (PASSED|FAILED)", 1.0),
        # float16's ran: its snapshot rewritten, and the results file holds its run (and names the rest)
        kept=tuple(name for name in COMMITTED if "float16" not in name and name != "results.json"),
    ),
]

BAD_INPUTS = MARKERS + CASES + SPECS + KERAS + SNAPSHOTS + RESULTS + OPTIONS + CLI + INTERRUPTS
