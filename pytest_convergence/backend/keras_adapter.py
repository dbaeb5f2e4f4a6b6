"""Everything that differs between Keras 3 and Keras 2, in one place, so the engine reads as one.

Keras 2 is ``tf.keras`` on TensorFlow 2.12–2.15, or the ``tf_keras`` package on TensorFlow 2.16+
when ``TF_USE_LEGACY_KERAS=1`` is set (as TensorFlow itself reads it). Keras 3 is the ``keras``
package on TensorFlow 2.16+. The engines reuse each version's own ``train_step``, loss tracker and
batch drawing, so a run is bit-identical to that version's ``model.fit``; what they reach into
differs by version:

=========================  ======================================  ======================================
                           Keras 3                                 Keras 2
=========================  ======================================  ======================================
per-step loss              ``model._loss_tracker.update_state``    ``compiled_loss._total_loss_mean``
batches                    ``TFEpochIterator``, re-seeded per      ``DataHandler``: one shuffled stream
                           epoch, so every epoch is the same       over all epochs, each epoch differs
dtype policy               ``keras.config.set_dtype_policy``       ``mixed_precision.set_global_policy``
loss computed in           the ``Loss`` object's dtype: float32    the model output's dtype
                           (``floatx``) unless given, whatever
                           the model's dtype
loss scaling               ``optimizer.scale_loss``                ``optimizer.get_scaled_loss``
weight names (raw)         ``variable.path`` (``model/dense/..``)  ``variable.name`` (``dense/kernel:0``)
=========================  ======================================  ======================================
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..case import Case
from ..errors import KerasVersionError, TensorFlowMissingError
from . import drawn
from .importable import make_importable, names_an_importable

LEGACY_SWITCH = "TF_USE_LEGACY_KERAS"
SOURCE_EPOCHS = 1 << 30
"""Keras 2's DataHandler over data that is not arrays: as many epochs as any run may draw."""


def legacy_requested() -> bool:
    """Whether the user asked TensorFlow 2.16+ for Keras 2, read as TensorFlow reads it."""
    return os.environ.get(LEGACY_SWITCH, "").strip().lower() in ("1", "true", "yes")


def installed_major() -> int | None:
    """The Keras major version ``load`` will give, read from package metadata without importing.

    For code that must decide before TensorFlow is imported (test collection, say); None when no
    TensorFlow is installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"):
        try:
            major, minor = (int(part) for part in version(distribution).split(".")[:2])
        except (PackageNotFoundError, ValueError):
            continue
        return 2 if (major, minor) < (2, 16) or legacy_requested() else 3
    return None


def load(tf: Any) -> Flavour:
    """The Keras that ``tf.keras`` means in this environment, wrapped in its flavour."""
    major, minor = (int(part) for part in tf.__version__.split(".")[:2])
    if (major, minor) < (2, 16):
        import keras  # Keras 2, the same module as tf.keras

        return Keras2(keras, package="keras", tf=tf)
    if legacy_requested():
        try:
            import tf_keras
        except ImportError as error:
            raise TensorFlowMissingError(
                f"{LEGACY_SWITCH}=1 asks for Keras 2, but the tf-keras package is not installed; "
                f"install the one matching TensorFlow {tf.__version__}: "
                f"pip install 'tf-keras~={major}.{minor}.0' (or unset {LEGACY_SWITCH} for Keras 3)"
            ) from error
        return Keras2(tf_keras, package="tf_keras", tf=tf)
    import keras

    return Keras3(keras, package="keras", tf=tf)


class Flavour:
    """One Keras version's way of doing what the engines need."""

    major = 0
    portable = False
    """Keras 3 on JAX or PyTorch (:mod:`.portable`): no TensorFlow in the training."""
    epochs_repeat = False
    """True when, with a seed set, every epoch draws the same batches (checked, not trusted)."""

    def __init__(self, keras: Any, package: str, tf: Any) -> None:
        self.keras = keras
        self.package = package
        self.tf = tf

    def unsupported(self, api: str, error: BaseException | None = None) -> KerasVersionError:
        """The error for a private Keras API that is not as this flavour expects it."""
        return KerasVersionError(api, f"{self.version} ({self.package})", error)

    @property
    def version(self) -> str:
        return str(self.keras.__version__)

    def describe(self) -> dict[str, str]:
        """What a run records about the Keras it ran on."""
        return {
            "keras": self.version,
            "keras_major": str(self.major),
            "keras_backend": self.backend(),
            "keras_package": self.package,
        }

    def backend(self) -> str:
        return "tensorflow"

    @contextlib.contextmanager
    def dtype_policy(self, policy: str) -> Iterator[None]:
        """Make ``policy`` the global dtype policy while a model is built and compiled.

        Layers that don't name a dtype follow it, and ``compile`` wraps the optimizer in a
        ``LossScaleOptimizer`` for ``mixed_float16``, exactly as for a user who set it themselves.
        """
        previous = self._get_policy()
        self._set_policy(policy)
        try:
            yield
        finally:
            self._set_policy(previous)

    def _get_policy(self) -> Any:
        raise NotImplementedError

    def _set_policy(self, policy: Any) -> None:
        raise NotImplementedError

    def loss_tracker(self, model: Any) -> Any:
        """The metric ``train_step`` hands each step's total loss to, or None."""
        raise NotImplementedError

    def trainable_variables(self, model: Any) -> list[Any]:
        """The model's trainable weights as ``tf.Variable`` objects, for reads inside a traced loop."""
        return list(model.trainable_weights)

    def metric_names_if_built(self, model: Any) -> list[str] | None:
        """The names of the logs ``train_step`` will return, when the model's optimizer and
        metrics are already built before training; None where only tracing a step builds them."""
        return None

    def build_state_symbolically(self, model: Any, batch: Any) -> bool:
        """Build the optimizer's and the compiled metrics' state from ``batch``'s shapes alone, as
        fit's symbolic build does, instead of tracing ``train_step`` for it; whether it did.
        None of it computes: the variables it makes are the zeros a trace would make."""
        return False

    @staticmethod
    def base_optimizer(optimizer: Any) -> Any:
        """The optimizer doing the arithmetic: the inner one of a ``LossScaleOptimizer``."""
        return getattr(optimizer, "inner_optimizer", None) or optimizer

    @staticmethod
    def scales_loss(optimizer: Any) -> bool:
        """Whether ``optimizer`` is a ``LossScaleOptimizer`` (as ``mixed_float16`` compiles one)."""
        return getattr(optimizer, "inner_optimizer", None) is not None

    def epochs(self, model: Any, case: Case, *, build: bool = False) -> Iterator[list[Any]]:
        """Each epoch's batches, drawn exactly as ``model.fit`` draws them, one list per epoch.

        ``build`` first builds the model from the data the way ``fit`` does before training
        (Keras 3.4+; older versions build while tracing the step, as ``fit`` does there too).
        """
        raise NotImplementedError

    @staticmethod
    def all_layers(model: Any) -> list[Any]:
        """Every layer inside ``model``, itself first, nested ones included (a custom layer's own
        sublayers too), parents before their children."""
        flatten = getattr(model, "_flatten_layers", None)
        if flatten is not None:
            return list(flatten())
        found = [model]
        for layer in getattr(model, "layers", []):
            found += Flavour.all_layers(layer)
        return found

    def unbuilt(self, model: Any) -> bool:
        """Whether some layer of ``model`` (itself included) has not built its variables yet: a
        subclassed model, or a ``Sequential`` without an ``Input``, before its first call."""
        return not all(getattr(layer, "built", True) for layer in self.all_layers(model))

    def build_from_batch(self, model: Any, batch: Any) -> None:
        """Build an unbuilt model's variables from one batch of the data, as ``fit`` builds it,
        without running it: so its weights exist (and are read) before the first step."""
        raise NotImplementedError

    def validation_batches(self, model: Any, x: Any, y: Any, batch_size: int) -> list[Any] | None:
        """The batches ``evaluate`` draws from validation data (in order, unshuffled), for a loop
        that validates inside its graph; None where evaluation must go through ``evaluate``."""
        return None

    def source_epochs(self, model: Any, x: Any, *, case: Case | None) -> drawn.Started:
        """Keras's own epoch iterator on a dataset, PyDataset or generator ``x``, started as
        ``fit`` starts it: with the case's ``steps_per_epoch``, ``shuffle`` and ``class_weight``
        for training, or as ``evaluate`` draws validation data when ``case`` is None; with the
        element spec of the batches it gives (what fit's step is traced with)."""
        raise NotImplementedError

    def build_from_source(self, model: Any, batch: Any) -> None:
        """What ``fit`` builds from the data before training, from the first drawn batch."""
        raise NotImplementedError

    def _source_training(self, model: Any, case: Case, *, build: bool) -> Iterator[list[Any]]:
        """The epochs of a case whose x is a dataset, PyDataset or generator: drawn once per data
        object (:mod:`.drawn`), so every run and engine trains on the batches fit drew."""
        epochs, _ = drawn.training_epochs(case, lambda: self.source_epochs(model, case.x, case=case))
        if build and epochs and epochs[0]:
            self.build_from_source(model, epochs[0][0])
        return iter(epochs)

    def get(self, kind: str, spec: Any) -> Any:
        """``keras.losses.get`` or ``keras.optimizers.get``, raising for what they do not know.

        Keras 2's ``losses.get`` hands back an unknown class name as a string instead of raising,
        and ``compile`` would fail on it much later, far from the user's mistake.
        """
        if names_an_importable(spec):
            spec = make_importable(spec)  # a loss of the user's own, named in a spec file
        module = getattr(self.keras, kind)
        found = module.get(spec)
        if not self.usable_as(kind, found):
            name = spec.get("class_name", spec) if isinstance(spec, dict) else spec
            raise ValueError(f"Unknown {'loss' if kind == 'losses' else 'optimizer'}: {name!r}")
        return found

    def usable_as(self, kind: str, value: Any) -> bool:
        """Whether ``value`` is a Keras object ``compile`` takes as a loss (``losses``) or an
        optimizer (``optimizers``): a loss object given as the optimizer is not."""
        if kind == "optimizers":
            return isinstance(value, self.keras.optimizers.Optimizer) or _is_legacy_optimizer(value)
        return callable(value) and not isinstance(value, str)

    def stacked_epochs(self, model: Any, case: Case) -> list[Any] | None:
        """Every epoch's batches at once: for each position in the epoch, that batch of every
        epoch stacked (``[epochs, batch, ...]``); None where drawing them one by one is needed."""
        return None

    def unpack(self, batch: Any) -> tuple[Any, Any, Any]:
        return self.keras.utils.unpack_x_y_sample_weight(batch)

    def compute_loss(self, model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
        raise NotImplementedError

    def scale_loss(self, optimizer: Any, loss: Any) -> Any:
        """The loss as the optimizer differentiates it (multiplied by a loss scale, if any)."""
        raise NotImplementedError

    def loss_scale(self, optimizer: Any) -> float:
        raise NotImplementedError

    def variable(self, value: np.ndarray, dtype: str) -> Any:
        raise NotImplementedError

    def weight_name(self, model: Any, weight: Any) -> str:
        """The one naming scheme of weights in runs, snapshots, results and gates: the weight's
        path inside the model, ``layer/weight`` (``dense/kernel``; a nested model's weights keep
        its name, ``base/dense/kernel``), the same on Keras 2 and 3 and whatever the model is
        called, so a Sequential case, a builder's functional model and a spec file agree."""
        name = self._raw_name(weight)
        prefix = f"{model.name}/"
        return name.removeprefix(prefix)

    def _raw_name(self, weight: Any) -> str:
        raise NotImplementedError

    def model_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A ``Sequential`` config as written for Keras 3, in the words this version takes."""
        return config

    def deserialize(self, spec: dict[str, Any]) -> Any:
        return self.keras.saving.deserialize_keras_object(spec)

    def pin_loss_dtype(self, loss: Any, dtype: str) -> Any:
        """A loss that computes in ``dtype`` whatever the model's output dtype.

        Both versions' ``compile`` accept a ``Loss`` object and call it as is, so wrapping the
        user's loss (or loss function) changes only the dtype its arithmetic runs in.
        """
        keras = self.keras
        tf = self.tf
        inner = loss
        per_sample = inner.call if isinstance(inner, keras.losses.Loss) else inner
        name = getattr(inner, "name", None) or getattr(inner, "__name__", "loss")
        reduction = getattr(inner, "reduction", None)
        arguments: dict[str, Any] = {"name": name}
        if reduction is not None:
            arguments["reduction"] = reduction
        if self.major >= 3:
            arguments["dtype"] = dtype

        class PinnedDtypeLoss(keras.losses.Loss):  # type: ignore[name-defined]
            def call(self, y_true: Any, y_pred: Any) -> Any:
                return per_sample(tf.cast(y_true, dtype), tf.cast(y_pred, dtype))

        pinned = PinnedDtypeLoss(**arguments)
        # what the probes read back: the dtype it computes in, and the user's loss it wraps
        pinned.pinned_dtype = dtype
        pinned.unpinned = inner
        return pinned

    def loss_objects(self, model: Any) -> list[Any]:
        """The losses the compiled model computes with, one per output that has a loss, in output
        order: read from the compiled container once a step has built it (``Loss`` objects, a
        name or function wrapped as ``compile`` wraps it), else resolved from ``model.loss`` with
        ``keras.losses.get`` (a name may then stay a plain loss function). Empty when unknown."""
        raise NotImplementedError

    def loss_object_dtype(self, loss: Any) -> str | None:
        """The dtype ``loss`` computes in when it decides that itself (a pinned loss; in Keras 3
        every ``Loss``); None where it computes in the dtype of the outputs it is given."""
        pinned = getattr(loss, "pinned_dtype", None)
        return str(pinned) if pinned else None

    def match_target_rank(self, y: Any, y_pred: Any) -> Any:
        """``y`` shaped as the compiled loss container hands it to a loss: Keras 2's container
        gives rank-1 targets of a rank-2 output a trailing axis; Keras 3's leaves that to the loss."""
        return y

    def _resolve_losses(self, spec: Any) -> list[Any]:
        """``compile``'s ``loss`` argument as a list of losses (``Loss`` objects or functions)."""
        if isinstance(spec, dict) and "class_name" not in spec:
            specs = list(spec.values())
        elif isinstance(spec, (list, tuple)):
            specs = list(spec)
        else:
            specs = [spec]
        losses = self.keras.losses
        found = []
        for one in specs:
            if one is None:
                continue
            resolved = losses.get(one) if isinstance(one, (str, dict)) else one
            if not callable(resolved):
                return []
            found.append(resolved)
        return found


class Keras3(Flavour):
    major = 3
    epochs_repeat = True

    def backend(self) -> str:
        return str(self.keras.config.backend())

    def _get_policy(self) -> Any:
        # keras.config has the dtype policy from Keras 3.0.5; 3.0.0-3.0.4 keep it in mixed_precision
        if hasattr(self.keras.config, "dtype_policy"):
            return self.keras.config.dtype_policy()
        return self.keras.mixed_precision.dtype_policy()

    def _set_policy(self, policy: Any) -> None:
        if hasattr(self.keras.config, "set_dtype_policy"):
            self.keras.config.set_dtype_policy(policy)
        else:
            self.keras.mixed_precision.set_dtype_policy(policy)

    def loss_tracker(self, model: Any) -> Any:
        return getattr(model, "_loss_tracker", None)

    def build_state_symbolically(self, model: Any, batch: Any) -> bool:
        # Keras 3.4-3.x's fit ran this before training on every backend; later ones defer it on
        # TensorFlow without a distribution strategy to the first trace of train_step, which
        # costs a second or more on a real model. The zeros it makes are the trace's.
        symbolic_build = getattr(model, "_symbolic_build", None)
        if symbolic_build is None:
            return False
        try:
            symbolic_build(data_batch=batch)
        except Exception:  # the trace that follows reports the user's mistake as such
            return False
        return True

    def metric_names_if_built(self, model: Any) -> list[str] | None:
        # Keras 3.4+ builds optimizer and metrics symbolically from the data (``_maybe_symbolic_build``);
        # train_step then returns get_metrics_result(), whose keys are known without a trace.
        optimizer = getattr(model, "optimizer", None)
        results = getattr(model, "get_metrics_result", None)
        if optimizer is None or not getattr(optimizer, "built", False) or results is None:
            return None
        if not all(getattr(metric, "built", True) for metric in model.metrics):
            return None
        return sorted(results().keys())

    def trainable_variables(self, model: Any) -> list[Any]:
        # Keras 3 wraps each tf.Variable; the loop reads the tf.Variable itself (``.value``).
        tf = self.tf
        return [w if isinstance(w, tf.Variable) else w.value for w in model.trainable_weights]

    def epochs(self, model: Any, case: Case, *, build: bool = False) -> Iterator[list[Any]]:
        if case.data_kind != "arrays":
            return self._source_training(model, case, build=build)
        try:
            from keras.src.backend.tensorflow.trainer import TFEpochIterator
        except ImportError as error:
            raise self.unsupported("TFEpochIterator (keras.src.backend.tensorflow.trainer)", error) from None
        arguments = {
            "x": case.fit_x,
            "y": case.fit_y,
            "batch_size": case.effective_batch_size,
            "shuffle": case.shuffle,
            "distribute_strategy": model.distribute_strategy,
            "steps_per_execution": 1,
            **_weights(case),
        }
        try:
            iterator = TFEpochIterator(**arguments)
        except TypeError as error:
            if "argument" in str(error):  # the constructor's signature changed, not the data
                raise self.unsupported("TFEpochIterator(...) arguments", error) from None
            raise
        symbolic_build = getattr(model, "_maybe_symbolic_build", None)
        if build and symbolic_build is not None:
            symbolic_build(iterator=iterator)
        return self._each_epoch(iterator)

    def build_from_batch(self, model: Any, batch: Any) -> None:
        # fit's own symbolic build (Keras 3 runs it before training under a distribution strategy
        # and on JAX): the layers, the compiled loss and metrics and the optimizer, from the
        # batch's shapes and dtypes, nothing computed
        symbolic_build = getattr(model, "_symbolic_build", None)
        if symbolic_build is None:
            raise self.unsupported("Model._symbolic_build")
        symbolic_build(data_batch=batch)

    def validation_batches(self, model: Any, x: Any, y: Any, batch_size: int) -> list[Any] | None:
        # evaluate's own iterator: TFEpochIterator(shuffle=False), batches in order
        try:
            from keras.src.backend.tensorflow.trainer import TFEpochIterator

            iterator = TFEpochIterator(
                x=x,
                y=y,
                batch_size=batch_size,
                shuffle=False,
                distribute_strategy=model.distribute_strategy,
                steps_per_execution=1,
            )
        except (ImportError, TypeError):
            return None  # evaluate() itself still works; the loop falls back to it
        return next(self._each_epoch(iterator))

    def source_epochs(self, model: Any, x: Any, *, case: Case | None) -> drawn.Started:
        # fit's sequence on a dataset, PyDataset or generator: its TFEpochIterator, the symbolic
        # build (which draws a batch under a distribution strategy), reset(), then the epochs
        try:
            from keras.src.backend.tensorflow.trainer import TFEpochIterator
        except ImportError as error:
            raise self.unsupported("TFEpochIterator (keras.src.backend.tensorflow.trainer)", error) from None
        arguments = {
            "x": x,
            "steps_per_epoch": case.steps_per_epoch if case else None,
            "shuffle": _source_shuffle(case),
            "class_weight": case.class_weight if case else None,
            "distribute_strategy": model.distribute_strategy,
            "steps_per_execution": 1,
        }
        try:
            iterator = TFEpochIterator(**arguments)
        except TypeError as error:
            if "argument" in str(error):
                raise self.unsupported("TFEpochIterator(...) arguments", error) from None
            raise
        symbolic_build = getattr(model, "_maybe_symbolic_build", None)
        if case is not None and symbolic_build is not None:
            symbolic_build(iterator=iterator)
        if hasattr(iterator, "reset"):
            iterator.reset()
        spec = getattr(getattr(iterator, "_distributed_dataset", None), "element_spec", None)
        return drawn.Started(spec, self._each_source_epoch(iterator))

    @staticmethod
    def _each_source_epoch(iterator: Any) -> Iterator[list[Any]]:
        while True:
            batches: list[Any] = []
            with iterator.catch_stop_iteration():
                for entry in iterator if hasattr(iterator, "__iter__") else iterator.enumerate_epoch():
                    source = entry[-1]
                    batches.append(next(source) if hasattr(source, "__next__") else source)
            yield batches

    def build_from_source(self, model: Any, batch: Any) -> None:
        symbolic_build = getattr(model, "_maybe_symbolic_build", None)
        if symbolic_build is not None:
            symbolic_build(data_batch=batch)

    @staticmethod
    def _each_epoch(iterator: Any) -> Iterator[list[Any]]:
        while True:
            # Keras 3.4+ iterates the epoch iterator itself; 3.0-3.3 has enumerate_epoch().
            entries = iterator if hasattr(iterator, "__iter__") else iterator.enumerate_epoch()
            batches = []
            for entry in entries:
                source = entry[-1]
                batches.append(next(source) if hasattr(source, "__next__") else source)
            yield batches

    def compute_loss(self, model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
        import inspect

        compute = getattr(model, "_compute_loss", None) or model.compute_loss
        arguments = {"x": x, "y": y, "y_pred": y_pred, "sample_weight": sample_weight}
        if "training" in inspect.signature(compute).parameters:  # Keras 3.4+
            arguments["training"] = True
        return compute(**arguments)

    def loss_objects(self, model: Any) -> list[Any]:
        compiled = getattr(model, "_compile_loss", None)
        if compiled is None:
            return []
        flat = getattr(compiled, "_flat_losses", None)
        if getattr(compiled, "built", False) and flat is not None:
            return [entry.loss for entry in flat if entry.loss is not None]
        return self._resolve_losses(getattr(model, "loss", None))

    def loss_object_dtype(self, loss: Any) -> str | None:
        # Loss.__call__ converts y_true and y_pred to loss.dtype (floatx unless given) and
        # computes there; the compiled container then casts the value to float32 for the tracker
        pinned = super().loss_object_dtype(loss)
        if pinned is not None:
            return pinned
        if isinstance(loss, self.keras.losses.Loss):
            return str(self.keras.backend.standardize_dtype(loss.dtype))
        return str(self.keras.config.floatx())

    def scale_loss(self, optimizer: Any, loss: Any) -> Any:
        return optimizer.scale_loss(loss) if optimizer is not None else loss

    def loss_scale(self, optimizer: Any) -> float:
        if not self.scales_loss(optimizer):
            return 1.0
        return float(np.asarray(optimizer.dynamic_scale))

    def variable(self, value: np.ndarray, dtype: str) -> Any:
        return self.keras.Variable(value, dtype=dtype)

    def _raw_name(self, weight: Any) -> str:
        return str(getattr(weight, "path", None) or weight.name)


class Keras2(Flavour):
    major = 2
    epochs_repeat = False  # one shuffled stream: each epoch is a new permutation

    def _get_policy(self) -> Any:
        return self.keras.mixed_precision.global_policy()

    def _set_policy(self, policy: Any) -> None:
        self.keras.mixed_precision.set_global_policy(policy)

    def loss_tracker(self, model: Any) -> Any:
        compiled = getattr(model, "compiled_loss", None)
        return getattr(compiled, "_total_loss_mean", None)

    def _data_handler(self, model: Any, case: Case) -> Any:
        try:
            get_data_handler = self.keras.__internal__.utils.get_data_handler
        except AttributeError as error:
            raise self.unsupported("keras.__internal__.utils.get_data_handler", error) from None
        return get_data_handler(
            x=case.fit_x,
            y=case.fit_y,
            batch_size=case.effective_batch_size,
            epochs=case.total_epochs,
            shuffle=case.shuffle,
            model=model,
            steps_per_execution=None,
            **_weights(case),
        )

    def epochs(self, model: Any, case: Case, *, build: bool = False) -> Iterator[list[Any]]:
        if case.data_kind != "arrays":
            return self._source_training(model, case, build=build)
        return self._each_epoch(self._data_handler(model, case))

    def source_epochs(self, model: Any, x: Any, *, case: Case | None) -> drawn.Started:
        # fit's DataHandler on the data; epochs unbounded here (one drawing serves every run),
        # which changes nothing for data that is not arrays: it only ends enumerate_epochs
        try:
            get_data_handler = self.keras.__internal__.utils.get_data_handler
        except AttributeError as error:
            raise self.unsupported("keras.__internal__.utils.get_data_handler", error) from None
        handler = get_data_handler(
            x=x,
            steps_per_epoch=case.steps_per_epoch if case else None,
            epochs=SOURCE_EPOCHS,
            shuffle=_source_shuffle(case),
            class_weight=case.class_weight if case else None,
            model=model,
            steps_per_execution=None,
        )
        spec = getattr(getattr(handler, "_dataset", None), "element_spec", None)
        return drawn.Started(spec, self._each_epoch(handler))

    def build_from_source(self, model: Any, batch: Any) -> None:
        return  # Keras 2's fit builds while tracing its step

    def build_from_batch(self, model: Any, batch: Any) -> None:
        # the model called on the batch's specs in a trace that runs nothing, as fit's first trace
        # of its step calls it (Keras 2 creates the variables outside the graph, initialised)
        tf = self.tf
        x, _, _ = self.unpack(batch)
        specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), x)
        tf.function(lambda inputs: model(inputs, training=False)).get_concrete_function(specs)

    @staticmethod
    def _each_epoch(handler: Any) -> Iterator[list[Any]]:
        for _, iterator in handler.enumerate_epochs():
            batches = []
            with handler.catch_stop_iteration():
                for _ in handler.steps():
                    batches.append(next(iterator))
            yield batches

    def stacked_epochs(self, model: Any, case: Case) -> list[Any] | None:
        """Draw all epochs from fit's own iterator inside one ``tf.function``.

        ``fit`` pulls each batch with ``next(iterator)`` inside its traced step; pulling them in
        a traced loop gives the same batches in the same order, at graph speed rather than one
        Python call per batch (100,000 epochs of the seed case: seconds instead of minutes).
        """
        tf = self.tf
        handler = self._data_handler(model, case)
        adapter = getattr(handler, "_adapter", None)
        if adapter is None or not hasattr(adapter, "should_recreate_iterator"):
            raise self.unsupported("DataHandler._adapter.should_recreate_iterator()")
        if adapter.should_recreate_iterator():
            return None
        _, iterator = next(iter(handler.enumerate_epochs()))
        epochs, positions = case.total_epochs, case.batches_per_epoch
        specs = iterator.element_spec
        width = len(tf.nest.flatten(specs))

        @tf.function(autograph=False)
        def draw(iterator: Any) -> list[Any]:
            def body(epoch: Any, *arrays: Any) -> tuple[Any, ...]:
                written = list(arrays)
                for position in range(positions):
                    for index, tensor in enumerate(tf.nest.flatten(iterator.get_next())):
                        slot = position * width + index
                        written[slot] = written[slot].write(epoch, tensor)
                return (epoch + 1, *written)

            arrays = [
                tf.TensorArray(spec.dtype, size=epochs, infer_shape=False)
                for _ in range(positions)
                for spec in tf.nest.flatten(specs)
            ]
            done = tf.while_loop(lambda epoch, *_: epoch < epochs, body, (tf.constant(0), *arrays))
            return [array.stack() for array in done[1:]]

        stacked = draw(iterator)
        return [
            tf.nest.pack_sequence_as(specs, stacked[position * width : (position + 1) * width])
            for position in range(positions)
        ]

    def compute_loss(self, model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
        return model.compute_loss(x, y, y_pred, sample_weight)

    def loss_objects(self, model: Any) -> list[Any]:
        compiled = getattr(model, "compiled_loss", None)
        if compiled is None:
            return []
        if getattr(compiled, "built", False):
            return [loss for loss in compiled._losses if loss is not None]
        return self._resolve_losses(getattr(model, "loss", None))

    def match_target_rank(self, y: Any, y_pred: Any) -> Any:
        # compile_utils.match_dtype_and_rank
        if len(y.shape) == 1 and len(y_pred.shape) == 2:
            return self.tf.expand_dims(y, axis=-1)
        return y

    def scale_loss(self, optimizer: Any, loss: Any) -> Any:
        scaled = getattr(optimizer, "get_scaled_loss", None)
        return scaled(loss) if scaled is not None else loss

    def loss_scale(self, optimizer: Any) -> float:
        if not self.scales_loss(optimizer):
            return 1.0
        return float(np.asarray(optimizer.loss_scale))

    def variable(self, value: np.ndarray, dtype: str) -> Any:
        return self.tf.Variable(value, dtype=dtype)

    def _raw_name(self, weight: Any) -> str:
        # Keras 2 names a Sequential's kernel dense/kernel:0, where Keras 3's path is <model>/dense/kernel
        return str(weight.name).removesuffix(":0")

    def weight_name(self, model: Any, weight: Any) -> str:
        """Keras 3's path: Keras 2 leaves a nested model's name out of its layers' weight names
        (``dense/kernel:0`` inside a nested ``base``), Keras 3 keeps it (``base/dense/kernel``)."""
        name = super().weight_name(model, weight)
        nested = self._nested_prefixes(model).get(id(weight))
        return f"{nested}/{name}" if nested and not name.startswith(nested + "/") else name

    def _nested_prefixes(self, model: Any, prefix: str = "") -> dict[int, str]:
        """id(weight) -> the names of the nested models holding it, outermost first."""
        found: dict[int, str] = {}
        for layer in getattr(model, "layers", []):
            if isinstance(layer, self.keras.Model):
                inner = f"{prefix}/{layer.name}" if prefix else layer.name
                found.update({id(w): inner for w in layer.weights})
                found.update(self._nested_prefixes(layer, inner))
        return found

    def model_config(self, config: dict[str, Any]) -> dict[str, Any]:
        layers = config.get("config", {}).get("layers")
        if not isinstance(layers, list):
            return config
        translated = []
        for layer in layers:
            inner = dict(layer.get("config", {}))
            if layer.get("class_name") == "InputLayer":
                # Keras 3's names for the input shape; Keras 2 calls them batch_input_shape, input_shape
                if "batch_shape" in inner:
                    inner["batch_input_shape"] = inner.pop("batch_shape")
                if "shape" in inner:
                    inner["input_shape"] = inner.pop("shape")
            translated.append({**layer, "config": inner})
        return {**config, "config": {**config["config"], "layers": translated}}

    def deserialize(self, spec: dict[str, Any]) -> Any:
        saving = getattr(self.keras, "saving", None)
        deserialize = getattr(saving, "deserialize_keras_object", None)
        return (deserialize or self.keras.utils.deserialize_keras_object)(spec)


def _source_shuffle(case: Case | None) -> bool:
    """``shuffle`` as it reaches fit's iterator for a dataset, PyDataset or generator: it only
    shuffles a PyDataset's batch order (fit ignores it, with a warning, for the others)."""
    return bool(case is not None and case.shuffle and case.data_kind == "pydataset")


def _weights(case: Case) -> dict[str, Any]:
    """``sample_weight`` and ``class_weight`` as fit's iterator takes them, where the case has any."""
    given = {"sample_weight": case.sample_weight, "class_weight": case.class_weight}
    return {key: value for key, value in given.items() if value is not None}


def _is_legacy_optimizer(value: Any) -> bool:
    """Keras 2's pre-2.11 optimizers (``keras.optimizers.legacy``), which it still accepts."""
    return any(cls.__module__.split(".")[-2:-1] == ["legacy"] for cls in type(value).__mro__)
