"""Training one case in one dtype with one engine, from the built model to the :class:`Run`.

Three engines train a case the same way ``model.fit`` would:

``fit``
    plain ``model.fit``, the slow reference (about 44 ms an epoch on a two-sample model).
``loop``
    the whole training loop in one ``tf.function`` calling Keras's own ``train_step`` on the
    batches ``fit`` would draw: bit-identical to ``fit``'s history (:mod:`.loop`).
``xla``
    the same loop with ``jit_compile=True``: fastest, near ``fit``'s numbers, not equal.

:class:`Training` only sequences the jobs of its neighbours: building (:mod:`.build`), loss
capture (:mod:`.capture`), batches (:mod:`.batches`), the engines (:mod:`.loop`, :mod:`.fit`) and
the probes (:mod:`.probes`). It is separate from :func:`train` so a benchmark can trace once and
time executions alone.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..case import Case
from ..dtypes import DtypeInfo, dtype_info
from ..errors import CaseError, ConvergenceError, KerasVersionError, first_line
from ..history import History
from ..outcome import check_engine
from ..perturb import Perturbation, nudge_dtype, one_ulp_away
from ..run import InProcess, Run, Timing
from . import portable_probes, probes
from .batches import plan_batches
from .build import build_model, case_error, check_dtypes, loss_not_tracked, pin_initial_weights
from .callbacks import callback_fields, make_callbacks
from .capture import LossCapture
from .fit import execute_fit
from .frameworks import framework_versions, import_keras
from .keras_adapter import Flavour
from .loop import TrainingLoop
from .memory import peak_memory
from .portable_loop import plan_portable, portable_loop
from .portable_probes import check_portable
from .record import StepRecord


def train(
    case: Case,
    dtype: str,
    engine: str | None = None,
    *,
    trace_weights: int = 0,
    perturbation: Perturbation | None = None,
) -> Run:
    """Train ``case`` in ``dtype`` with ``engine`` (default: the case's, else ``loop``).

    ``trace_weights`` records the first that many (flattened) weights at every step, in
    ``run.history.weight_trace``; the ``loop`` and ``xla`` engines only. ``perturbation`` trains as
    another machine's rounding might (:mod:`..perturb`).
    """
    with warnings.catch_warnings():
        # Keras 3's variables on JAX and PyTorch, read by numpy 2: a deprecation of theirs, not the user's
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword")
        return _train(case, dtype, engine, trace_weights=trace_weights, perturbation=perturbation)


def _train(
    case: Case,
    dtype: str,
    engine: str | None,
    *,
    trace_weights: int,
    perturbation: Perturbation | None,
) -> Run:
    timing = Timing(wall_time=0.0)
    with timing.phase("build"):
        training = Training.prepare(
            case,
            dtype,
            engine or case.engine or "loop",
            trace_weights=trace_weights,
            perturbation=perturbation,
        )
    with training.reporting_runtime_errors(), timing.phase("trace"):
        training.compile_loop()
    training.keep_start()
    return _execute(training, timing)


def train_again(run: Run, perturbation: Perturbation | None = None) -> Run | None:
    """Train ``run``'s case once more on the model and traced loop that trained it, rewound to
    where its training began (every variable of the model, its optimizer and metrics), under
    ``perturbation``: a rerun of the same graph costs its training alone, not another build and
    trace (``--convergence-calibrate``'s perturbed reruns; ``--convergence-repeat`` builds anew,
    as it checks the build too). The first run's model is left
    as its training left it. None where this process cannot rewind it (another backend's run,
    the ``fit`` engine, Keras 2, whose random ops keep their state outside variables): then the
    caller trains it anew."""
    training = run.in_process.training
    if not isinstance(training, Training) or not training.rewindable:
        return None
    trained = training.state()
    training.rewind()
    training.perturbation = perturbation
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="__array__ implementation doesn't accept a copy keyword"
            )
            again = _execute(training, Timing(wall_time=0.0))
    finally:
        training.restore(trained)
        training.perturbation = run.in_process.perturbation
    again.in_process.model = None  # the model is the first run's: it holds that run's weights
    return again


def _execute(training: Training, timing: Timing) -> Run:
    """Execute a compiled training, timed, and turn it into its run with the probes' evidence."""
    case, dtype = training.case, training.dtype
    with training.reporting_runtime_errors():
        start, cpu_start = time.perf_counter(), time.process_time()
        with peak_memory(training.flavour.backend()) as memory:  # its reading costs ~0.1 ms
            record = training.execute()
        timing.wall_time = time.perf_counter() - start
        # the process's CPU time: what a busy neighbour inflates far less than the wall clock
        timing.cpu_time = time.process_time() - cpu_start
    memory.record_on(timing)
    timing.trace_time = timing.phases.get("trace", 0.0)
    validation = training.loop.validation_time if training.loop is not None else 0.0
    timing.phases["train"] = timing.wall_time - validation
    if validation:
        timing.phases["validation"] = validation
    if not training.capture.tensors:  # a user's own step that bypassed the loss tracker (fit)
        raise loss_not_tracked(case, dtype, training.flavour, training.model)
    if not np.isfinite(record.loss[0]):
        raise CaseError(
            f"the loss is {record.loss[0]} at the very first step, before any update: the model, "
            "the loss or the data produce it, not the training",
            case=case.name,
            dtype=dtype,
            field="loss",
            fix="check that the loss fits the labels (e.g. from_logits for unbounded outputs) "
            "and the model's output on x is finite",
        )
    with timing.phase("probes"):
        run = training.to_run(record, timing)
    run.in_process.batch_plan = training.plan
    run.in_process.training = training
    run.in_process.perturbation = training.perturbation
    return run


class Training:
    """One case, built and compiled in one dtype for one engine, ready to execute."""

    def __init__(
        self,
        case: Case,
        dtype: str,
        engine: str,
        flavour: Flavour,
        *,
        trace_weights: int = 0,
        perturbation: Perturbation | None = None,
    ) -> None:
        self.case = case
        self.perturbation = perturbation
        self.dtype = dtype
        self.engine = engine
        self.flavour = flavour
        self.tf = flavour.tf
        self.info = dtype_info(dtype)
        # made before the model, so a callback that cannot be made fails before any building
        self.callbacks: list[Any] = make_callbacks(flavour, case, dtype)
        """The callbacks of the next (or last) execution, fresh for it (:func:`.callbacks.make_callbacks`)."""
        self._callbacks_used = False
        built = build_model(case, dtype, flavour)
        self.model = built.model
        self.pinned_loss_dtype = built.pinned_loss_dtype
        self.capture = LossCapture(flavour, self.model)
        try:
            self._epochs = flavour.epochs(self.model, case, build=True)
        except (KerasVersionError, CaseError):  # CaseError: data that ran out, an unseeded shuffle
            raise
        except Exception as error:
            raise case_error(
                case,
                dtype,
                f"the model cannot take this data in {dtype}: {type(error).__name__}: {first_line(error)}",
                "x",
                fix="check the input shape of the model against x, and the output against y",
            ) from None
        if flavour.unbuilt(self.model):
            self._build_from_data()
        pin_initial_weights(case, dtype, self.model)
        # what trains is what the label says (or, where the case allows otherwise, what is recorded)
        self.trained = check_dtypes(case, dtype, flavour, self.model)
        self.info = DtypeInfo(dtype, self.trained.variable_dtype, self.trained.compute_dtype)
        self.initial_weights = self._weights()
        self._start: list[tuple[Any, np.ndarray]] = []
        self._start_weights: dict[str, np.ndarray] = {}
        self.plan: Any = None
        """The batches every step trains on (:func:`.batches.plan_batches`), once drawn."""
        self.loop: TrainingLoop | None
        if engine == "fit":
            self.loop = None
        elif flavour.portable:
            self.loop = portable_loop(
                flavour, self.model, case, dtype, self.capture, trace_weights=trace_weights
            )
        else:
            self.loop = TrainingLoop(
                flavour,
                self.model,
                case,
                dtype,
                self.capture,
                jit=engine == "xla",
                trace_weights=trace_weights,
            )

    @classmethod
    def prepare(
        cls,
        case: Case,
        dtype: str,
        engine: str,
        *,
        trace_weights: int = 0,
        perturbation: Perturbation | None = None,
    ) -> Training:
        check_engine(engine, case=case.name, dtype=dtype)
        dtype_info(dtype)
        _, flavour = import_keras()
        if flavour.portable:
            check_portable(flavour, case, dtype, engine)
        return cls(case, dtype, engine, flavour, trace_weights=trace_weights, perturbation=perturbation)

    @contextlib.contextmanager
    def reporting_runtime_errors(self) -> Iterator[None]:
        """Turn TensorFlow's failures while training into an error about the user's case.

        The usual one is a dtype the model cannot run in: an op with no kernel for float16 or
        bfloat16 on this device only fails when the graph first runs.
        """
        try:
            yield
        except self.runtime_errors() as error:
            unsupported = (
                self.flavour.kernel_missing(error)  # type: ignore[attr-defined]
                if self.flavour.portable
                else "No OpKernel was registered" in str(error)
            )
            raise case_error(
                self.case,
                self.dtype,
                (f"this model cannot run in {self.dtype} here: " if unsupported else "training failed: ")
                + first_line(error),
                "dtype" if unsupported else "model",
                fix=f"drop {self.dtype} from this case's dtypes, or use layers whose ops support it"
                if unsupported
                else None,
            ) from None

    def runtime_errors(self) -> tuple[type[BaseException], ...]:
        """What the backend raises when an op fails while training."""
        if self.flavour.portable:
            errors: tuple[type[BaseException], ...] = self.flavour.runtime_errors()  # type: ignore[attr-defined]
            return errors
        return (self.tf.errors.OpError,)

    @property
    def rewindable(self) -> bool:
        """Whether :meth:`rewind` gives a fresh model's training: the ``loop`` and ``xla`` engines
        on Keras 3 with TensorFlow, whose every state (weights, optimizer slots, metrics, the
        seed generators of Dropout and other random layers) lives in variables. Keras 2's random
        ops keep a hidden state, and ``fit`` builds its own iterator and function."""
        return (
            self.loop is not None
            and not self.flavour.portable
            and self.flavour.major >= 3
            and bool(self._start)
        )

    def _state_variables(self) -> list[Any]:
        """Every variable a training changes: the model's (trainable, non-trainable, seed
        generators'), its optimizer's (the inner one's too, under loss scaling) and metrics'."""
        model = self.model
        found: list[Any] = [*model.variables, *getattr(model, "metrics_variables", [])]
        for optimizer in {
            id(o): o for o in (model.optimizer, self.flavour.base_optimizer(model.optimizer))
        }.values():
            found += list(getattr(optimizer, "variables", []))
        for layer in self.flavour.all_layers(model):
            found += [generator.state for generator in getattr(layer, "_seed_generators", None) or []]
        unique: dict[int, Any] = {}
        for variable in found:
            unique.setdefault(id(variable), variable)
        return list(unique.values())

    def state(self) -> list[tuple[Any, np.ndarray]]:
        """The value of every state variable now (:meth:`_state_variables`)."""
        return [(variable, np.array(variable.numpy())) for variable in self._state_variables()]

    def keep_start(self) -> None:
        """Remember the state the first execution starts from (after tracing, before any step)."""
        if self.loop is not None and not self.flavour.portable and self.flavour.major >= 3:
            self._start = self.state()
            self._start_weights = dict(self.initial_weights)

    def rewind(self) -> None:
        """Back to the state the first execution started from."""
        self.restore(self._start)
        self.initial_weights = dict(self._start_weights)

    @staticmethod
    def restore(state: list[tuple[Any, np.ndarray]]) -> None:
        for variable, value in state:
            variable.assign(value)

    def compile_loop(self) -> None:
        """Trace (and for ``xla`` compile) the training loop, so execution can be timed alone."""
        if self.loop is not None:
            if self.flavour.portable:
                self.plan = plan_portable(self.case, self._epochs)
            else:
                self.plan = plan_batches(self.flavour, self.model, self.case, self._epochs)
            self.loop.compile(self.plan)

    def execute(self) -> StepRecord:
        """Run the whole training once (the loop must be compiled for ``loop`` and ``xla``).

        Under a perturbation the weights are nudged before the first step and, with ``loop`` and
        ``xla``, between the compiled loop's stretches at the perturbation's later steps (``fit``
        takes the first nudge only).
        """
        pauses: list[int] = []
        if self.perturbation is not None:
            pauses = self.perturbation.steps(self.case.seed, self.case.total_steps)[1:]
            self.nudge(0)
            self.initial_weights = self._weights()
        # fresh callbacks for every execution: no state carried from another dtype or repeat
        if self._callbacks_used:
            self.callbacks = make_callbacks(self.flavour, self.case, self.dtype)
        self._callbacks_used = True
        if self.loop is None:
            try:
                return execute_fit(
                    self.flavour, self.model, self.case, self.capture, self.pinned_loss_dtype, self.callbacks
                )
            except ConvergenceError:
                raise
            except self.runtime_errors():
                raise
            except Exception as error:  # Keras's own checks in fit: as clear as the loop's messages
                raise self.loop_error(error) from None
        return self.loop.execute(
            self.pinned_loss_dtype, pauses=pauses, on_pause=self.nudge, callbacks=self.callbacks
        )

    def nudge(self, step: int) -> None:
        """Move every trainable weight one ulp of the run's coarsest dtype, as the perturbation says."""
        assert self.perturbation is not None
        dtype = nudge_dtype(
            self.info.variable_dtype,
            self.info.compute_dtype,
            self.pinned_loss_dtype or self.capture.loss_dtype(),
        )
        rng = self.perturbation.rng(self.case.seed, step)
        tf = self.tf
        for variable in self.flavour.trainable_variables(self.model):
            values = np.asarray(variable.numpy()).astype(np.float64)
            moved = one_ulp_away(values, dtype, rng)
            if self.flavour.portable:
                variable.assign(moved.astype(np.asarray(variable.numpy()).dtype))
            else:
                variable.assign(tf.cast(tf.constant(moved, tf.float64), variable.dtype))

    def loop_error(self, error: BaseException) -> CaseError:
        """A Keras error while training, as the user's case error naming the layer where Keras does."""
        return case_error(
            self.case,
            self.dtype,
            f"the model cannot train on this data in {self.dtype} ({self.engine} engine): "
            f"{type(error).__name__}: {first_line(error)}",
            "model",
            fix="check the model's input shape against x, its output against y, and that the "
            "loss fits the labels; if it trains in float32, one of its layers does not support "
            f"{self.dtype}: drop {self.dtype} from this case's dtypes",
        )

    def _intended_update(self, gradients: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The update the optimizer means to make, in float64 (JAX's 64-bit switch on for it)."""
        with portable_probes.wide_floats(self.flavour) if self.flavour.portable else contextlib.nullcontext():
            return probes.intended_update(self.flavour, self.model, gradients)

    def _output_evidence(
        self, record: StepRecord, gradients: dict[str, np.ndarray], first_batch: Any
    ) -> dict[str, Any]:
        """The probe of the final outputs (:func:`.probes.output_evidence`), where the diagnosis
        reads it: a loss that ends at exactly 0 (was it an exact fit?) or final gradients that are
        all exactly 0 (saturated outputs, or a cast that underflowed?). Elsewhere no rule asks,
        and tracing the model's forward and backward pass again cost up to a second a run."""
        if not probes.needs_output_evidence(record.loss, gradients):
            return {}
        if self.flavour.portable:
            return portable_probes.output_evidence(self.flavour, self.model, first_batch)
        return probes.output_evidence(self.flavour, self.model, first_batch)

    def _build_from_data(self) -> None:
        """Build a model whose variables do not exist yet from the first batch, as ``fit`` does.

        A subclassed model (or a ``Sequential`` without an ``Input``) has no variables until it is
        first called, and ``model.build(shape)`` on a subclassed model marks it built without
        building its layers. ``fit`` builds them from the first batch; here they are built the
        same way before training, under the run's dtype policy (a layer made in ``build`` takes it),
        so the pinned and initial weights, the dtype check and every engine see them.
        """
        batch = self._first_batch()
        try:
            with self.flavour.dtype_policy(self.dtype):
                self.flavour.build_from_batch(self.model, batch)
        except (ConvergenceError, KerasVersionError):
            raise
        except Exception as error:
            raise case_error(
                self.case,
                self.dtype,
                f"the model could not be built from the first batch of x in {self.dtype}: "
                f"{type(error).__name__}: {first_line(error)}",
                "x",
                fix="check that the model's call() takes x as given (its shape, and a dict's keys "
                "for several inputs) and returns what the loss takes with y",
            ) from None

    def _weights(self) -> dict[str, np.ndarray]:
        return {self._name(w): np.array(w.numpy()) for w in self.model.weights}

    def _name(self, weight: Any) -> str:
        return probes.weight_name(self.flavour, self.model, weight)

    def _flat_names(self) -> list[str]:
        names = []
        for weight in self.model.trainable_weights:
            short = "/".join(self._name(weight).split("/")[-2:])
            names += [f"{short}[{i}]" for i in range(int(np.prod(weight.shape)))]
        return names

    def _first_batch(self) -> Any:
        batches = next(self.flavour.epochs(self.model, self.case))
        if not batches:
            raise case_error(self.case, self.dtype, "the data gave no batch", "x")
        return batches[0]

    def to_run(self, record: StepRecord, timing: Timing) -> Run:
        """The run: the record, the final weights and the probes' evidence, with versions."""
        if not self.trained.checked_layers:  # built while tracing (older Keras): check it now
            self.trained = check_dtypes(self.case, self.dtype, self.flavour, self.model)
            self.info = DtypeInfo(self.dtype, self.trained.variable_dtype, self.trained.compute_dtype)
        final_weights = self._weights()
        # the batch fit starts on: the loop's plan holds it (drawing an epoch again cost 0.2 s)
        first_batch = self.plan.first if self.plan is not None else self._first_batch()
        # the optimizer's intended update explains weights that stopped moving; a clone of the
        # optimizer applies it, twice (0.1-0.2 s each), so only where a weight did not move last
        needs_update = probes.needs_intended_update(record.weights_changed, record.tensor_update)
        if self.flavour.portable:
            gradients = portable_probes.final_gradients(self.flavour, self.model, first_batch)
        else:
            gradients = probes.final_gradients(self.flavour, self.model, first_batch)
        # what computed the loss (a loss object's own dtype), not what the tracker was handed
        loss_dtype = record.loss_dtype
        if not self.pinned_loss_dtype:
            loss_dtype = probes.loss_compute_dtype(self.flavour, self.model, record.loss_dtype)
        history = History(
            loss=record.loss,
            loss_dtype=loss_dtype,
            variable_dtype=self.info.variable_dtype,
            compute_dtype=self.info.compute_dtype,
            weights_changed=record.weights_changed,
            update_size=record.update_size,
            initial_weights=self.initial_weights,
            final_weights=final_weights,
            final_gradients=gradients,
            epoch_metrics=record.epoch_metrics,
            **callback_fields(record, self.case),
            steps_per_epoch=self.case.batches_per_epoch,
            target_loss=self.case.target_loss,
            optimizer=probes.describe_optimizer(self.flavour, self.model.optimizer),
            dtype_mismatch=self.trained.mismatch,
            step_logs=record.step_logs,
            log_names=record.log_names,
            weight_trace=record.weight_trace,
            weight_trace_names=self._flat_names()[: record.weight_trace.shape[1]],
            tensor_names=[self._name(w) for w in self.model.trainable_weights],
            tensor_update=record.tensor_update,
            tensor_checksum=record.tensor_checksum,
            gradient_zero=record.gradient_zero,
            intended_update=self._intended_update(gradients) if needs_update else None,
            update_in_variable_dtype=(
                probes.intended_update(self.flavour, self.model, gradients, self.info.variable_dtype)
                if needs_update
                else None
            ),
            output_evidence=self._output_evidence(record, gradients, first_batch),
        )
        return Run(
            case=self.case.name,
            dtype=self.dtype,
            engine=self.engine,
            seed=self.case.seed,
            history=history,
            timing=timing,
            versions=framework_versions(),
            optimizer_ran=probes.what_ran(self.flavour.base_optimizer(self.model.optimizer)),
            loss_ran=probes.what_ran(self.model.loss),
            expectation=self.case.expectation(self.dtype, self.flavour.backend()),
            snapshot_tolerance=self.case.snapshot_tolerance,
            in_process=InProcess(model=self.model, callbacks=self.callbacks),
        )
