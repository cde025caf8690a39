"""The TensorFlow step: ``tf.function`` + ``tf.GradientTape``, the path TensorFlow users read.

The state lives in the Keras variables and the optimiser updates them in place, so ``sync``
and ``reset`` have nothing to do. On several devices each update runs under
``MirroredStrategy.run`` (``distributed_step``). Imported only when Keras runs on TensorFlow.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import keras
import tensorflow as tf

from age_cgan.backend.forward import read_values, run_loss


def single_step(step, jit: bool):
    """One device: ``tf.function`` over one ``tf.GradientTape`` per update (in order)."""
    models, optimizers = step.models, step.optimizers

    def run(batch):
        metrics = {}
        for update in step.updates:
            values = {name: read_values(model, tf.identity) for name, model in models.items()}
            trainable = values[update.model][0]
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                loss, (aux, updated) = run_loss(update, models, values, trainable, batch)
            grads = tape.gradient(loss, trainable)
            optimizers[update.model].apply(grads, models[update.model].trainable_variables)
            for name, non_trainable in updated.items():
                for variable, value in zip(models[name].non_trainable_variables, non_trainable):
                    variable.assign(value)
            metrics.update(aux)
        return metrics

    return tf.function(run, reduce_retracing=True) if jit else run


def distributed_step(step, jit: bool, strategy):
    """TensorFlow on several devices: each update under ``strategy.run``.

    Every replica gets its rows of the global batch and computes its loss as the mean over
    them; the gradient of loss / replicas is summed over replicas by the optimiser (Keras's
    TensorFlow optimiser all-reduces in replica context), i.e. the gradient of the global-batch
    mean. BatchNorm statistics are all-reduced over replicas (``synchronized``) while the step
    is traced, so they too are the global batch's; the updated non-trainable values (equal on
    every replica) are written back between updates, outside the replicas. Scalars are the
    replicas' means (equal slices, so the global mean of a mean-type scalar).
    """
    models, optimizers = step.models, step.optimizers
    replicas = strategy.num_replicas_in_sync
    mean = tf.distribute.ReduceOp.MEAN

    def replica_update(update, batch):
        values = {name: read_values(model, tf.identity) for name, model in models.items()}
        trainable = values[update.model][0]
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            loss, (aux, updated) = run_loss(update, models, values, trainable, batch)
            share = loss / replicas  # the optimiser sums the replicas' gradients
        grads = tape.gradient(share, trainable)
        optimizers[update.model].apply(grads, models[update.model].trainable_variables)
        return aux, updated

    def first(value):
        return strategy.experimental_local_results(value)[0]

    def run(batch):
        metrics = {}
        with synchronized_batch_norm(models):
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
def synchronized_batch_norm(models):
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


def compile_function(fn: Callable, jit: bool = True) -> Callable:
    return tf.function(fn, reduce_retracing=True) if jit else fn


def value_and_grad(fn: Callable, jit: bool = True) -> Callable:
    def tf_value_and_grad(x, *args):
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x, *args)
        return value, tape.gradient(value, x)

    return compile_function(tf_value_and_grad, jit)
