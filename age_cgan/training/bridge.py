"""The backend bridge: the one module that names TensorFlow or JAX.

A training stage is written once as pure loss functions over ``Model.stateless_call`` (see
``Forward``). This module compiles them into a step for the backend Keras runs on:

* TensorFlow (default): ``tf.function`` + one ``tf.GradientTape`` per update; the state lives in
  the Keras variables and the optimiser updates them in place.
* JAX: ``jax.jit`` + ``jax.value_and_grad`` + ``optimizer.stateless_apply``; the state is held
  by the step as arrays (donated to each call) and written back to the Keras variables by
  ``sync()`` before anything reads them (checkpoints, sample grids).

A step runs its updates in order (e.g. D then G), each on the values the previous one left.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import keras

BACKEND = keras.backend.backend()


class Forward:
    """Calls models statelessly on given values, collecting the updated non-trainable values.

    ``f("generator", [z, age], training=True)`` runs the generator with the values of this
    step; BatchNorm statistics and dropout seeds it changes are kept in ``f.updated``.
    """

    def __init__(self, models: dict, values: dict):
        self.models, self.values, self.updated = models, values, {}

    def __call__(self, name, inputs, training=False):
        trainable, non_trainable = self.values[name]
        non_trainable = self.updated.get(name, non_trainable)
        outputs, non_trainable = self.models[name].stateless_call(
            trainable, non_trainable, inputs, training=training
        )
        if training:
            self.updated[name] = non_trainable
        return outputs


@dataclasses.dataclass(frozen=True)
class Update:
    """Train ``model``'s trainable variables on ``loss(forward, batch) -> (loss, metrics)``."""

    model: str
    loss: Callable


def _run_loss(update, models, values, trainable, batch):
    values = {**values, update.model: (trainable, values[update.model][1])}
    forward = Forward(models, values)
    loss, metrics = update.loss(forward, batch)
    return loss, (metrics, forward.updated)


def read_values(model, to_tensor=keras.ops.convert_to_tensor):
    """A model's (trainable, non-trainable) values as tensors, for ``stateless_call``."""
    return (
        [to_tensor(v.value) for v in model.trainable_variables],
        [to_tensor(v.value) for v in model.non_trainable_variables],
    )


class Step:
    """A compiled training step: ``step(batch) -> dict of scalar tensors`` (call ``sync()``
    before reading the Keras variables)."""

    def __init__(self, models: dict, optimizers: dict, updates: list[Update], jit: bool = True,
                 placement=None):
        """``placement`` (training.devices): the devices a batch is split over; None or one
        device is the single-device step. Networks and optimisers must have been created in
        ``placement.scope()``."""
        self.models, self.optimizers, self.updates = models, optimizers, list(updates)
        self.placement = placement if placement is not None and placement.distributed else None
        with self.placement.scope() if self.placement else contextlib.nullcontext():
            for update in self.updates:
                optimizer = optimizers[update.model]
                if not optimizer.built:
                    optimizer.build(models[update.model].trainable_variables)
        if BACKEND == "tensorflow" and self.placement is not None:
            self._step = _tf_distributed_step(self, jit, self.placement.strategy)
        elif BACKEND == "tensorflow":
            self._step = _tf_step(self, jit)
        else:
            self._step = _jax_step(self, jit)

    def __call__(self, batch):
        return self._step(batch)

    def sync(self):
        """Write the step's state into the Keras variables (a no-op on TensorFlow)."""
        if hasattr(self._step, "sync"):
            self._step.sync()

    def reset(self):
        """Re-read the Keras variables (after a checkpoint restore)."""
        if hasattr(self._step, "reset"):
            self._step.reset()


def _tf_step(step: Step, jit: bool):
    import tensorflow as tf

    models, optimizers = step.models, step.optimizers

    def run(batch):
        metrics = {}
        for update in step.updates:
            values = {name: read_values(model, tf.identity) for name, model in models.items()}
            trainable = values[update.model][0]
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                loss, (aux, updated) = _run_loss(update, models, values, trainable, batch)
            grads = tape.gradient(loss, trainable)
            optimizers[update.model].apply(grads, models[update.model].trainable_variables)
            for name, non_trainable in updated.items():
                for variable, value in zip(models[name].non_trainable_variables, non_trainable):
                    variable.assign(value)
            metrics.update(aux)
        return metrics

    return tf.function(run, reduce_retracing=True) if jit else run


def _tf_distributed_step(step: Step, jit: bool, strategy):
    """TensorFlow on several devices: each update under ``strategy.run``.

    Every replica gets its rows of the global batch and computes its loss as the mean over
    them; the gradient of loss / replicas is summed over replicas by the optimiser (Keras's
    TensorFlow optimiser all-reduces in replica context), i.e. the gradient of the global-batch
    mean. BatchNorm statistics are all-reduced over replicas (``synchronized``) while the step
    is traced, so they too are the global batch's; the updated non-trainable values (equal on
    every replica) are written back between updates, outside the replicas. Scalars are the
    replicas' means (equal slices, so the global mean of a mean-type scalar).
    """
    import tensorflow as tf

    models, optimizers = step.models, step.optimizers
    replicas = strategy.num_replicas_in_sync
    mean = tf.distribute.ReduceOp.MEAN

    def replica_update(update, batch):
        values = {name: read_values(model, tf.identity) for name, model in models.items()}
        trainable = values[update.model][0]
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss, (aux, updated) = _run_loss(update, models, values, trainable, batch)
            share = loss / replicas  # the optimiser sums the replicas' gradients
        grads = tape.gradient(share, trainable)
        optimizers[update.model].apply(grads, models[update.model].trainable_variables)
        return aux, updated

    def first(value):
        return strategy.experimental_local_results(value)[0]

    def run(batch):
        metrics = {}
        with _synchronized_batch_norm(models):
            for update in step.updates:
                aux, updated = strategy.run(lambda b, u=update: replica_update(u, b),
                                            args=(batch,))
                for name, non_trainable in updated.items():
                    for variable, value in zip(models[name].non_trainable_variables,
                                               non_trainable):
                        local = first(value)  # equal on every replica (seeds, synced BN)
                        variable.assign(strategy.reduce(mean, value, axis=None)
                                        if local.dtype.is_floating else local)
                metrics.update({k: strategy.reduce(mean, v, axis=None) for k, v in aux.items()})
        return metrics

    compiled = tf.function(run, reduce_retracing=True) if jit else run

    def split(batch):
        """The numpy global batch -> each replica's consecutive rows."""
        per = len(next(iter(batch.values()))) // replicas

        def rows(context):
            i = context.replica_id_in_sync_group
            return {k: v[i * per:(i + 1) * per] for k, v in batch.items()}

        return strategy.experimental_distribute_values_from_function(rows)

    def call(batch):
        with strategy.scope():
            return compiled(split(batch))

    return call


@contextlib.contextmanager
def _synchronized_batch_norm(models):
    """BatchNorm layers compute their batch statistics over all replicas while inside (read
    when the step is traced), and are left as they were (a saved model keeps
    ``synchronized=False``, which JAX can load)."""
    layers = [layer for model in models.values() for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized]
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronized = False


class _JaxState:
    """JAX: model and optimiser values held as arrays between steps."""

    def __init__(self, step: Step, jit: bool):
        import jax

        self.step = step
        self.trained = sorted({u.model for u in step.updates})
        self.reset()
        self._compiled = jax.jit(self._run, donate_argnums=(0, 1)) if jit else self._run

    def reset(self):
        self.values = {name: read_values(model) for name, model in self.step.models.items()}
        self.optimizer_values = {
            name: [keras.ops.convert_to_tensor(v) for v in self.step.optimizers[name].variables]
            for name in self.trained
        }

    def _run(self, values, optimizer_values, batch):
        import jax

        metrics = {}
        for update in self.step.updates:
            name = update.model

            def loss_fn(trainable):
                return _run_loss(update, self.step.models, values, trainable, batch)

            trainable, non_trainable = values[name]
            (_, (aux, updated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
            trainable, optimizer_values[name] = self.step.optimizers[name].stateless_apply(
                optimizer_values[name], grads, trainable
            )
            values = {**values, name: (trainable, non_trainable)}
            for other, new_non_trainable in updated.items():
                values[other] = (values[other][0], new_non_trainable)
            metrics.update(aux)
        return values, optimizer_values, metrics

    def __call__(self, batch):
        if self.step.placement is not None:  # sharded over the mesh's batch axis
            batch = self.step.placement.shard(batch)
        self.values, self.optimizer_values, metrics = self._compiled(
            self.values, dict(self.optimizer_values), batch
        )
        return metrics

    def sync(self):
        for name, model in self.step.models.items():
            trainable, non_trainable = self.values[name]
            for variable, value in zip(model.trainable_variables, trainable):
                variable.assign(value)
            for variable, value in zip(model.non_trainable_variables, non_trainable):
                variable.assign(value)
        for name in self.trained:
            for variable, value in zip(self.step.optimizers[name].variables, self.optimizer_values[name]):
                variable.assign(value)


def _jax_step(step: Step, jit: bool):
    return _JaxState(step, jit)


def compile_function(fn: Callable, jit: bool = True) -> Callable:
    """Compile a pure keras.ops function for the backend (tf.function or jax.jit)."""
    if not jit:
        return fn
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    return fn


def value_and_grad(fn: Callable, jit: bool = True) -> Callable:
    """``fn(x, *args) -> scalar`` (keras.ops) to a compiled ``(x, *args) -> (value, d value/dx)``.

    Used for per-image latent optimisation (z*_IP, z*_pixel), where x is the latent batch and
    the networks are frozen inside ``fn``.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def tf_value_and_grad(x, *args):
            x = tf.convert_to_tensor(x)
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = fn(x, *args)
            return value, tape.gradient(value, x)

        return compile_function(tf_value_and_grad, jit)
    if BACKEND == "jax":
        import jax

        return compile_function(jax.value_and_grad(fn), jit)
    raise NotImplementedError(f"backend {BACKEND!r} is not supported; use tensorflow or jax")
