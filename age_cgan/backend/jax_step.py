"""The JAX step: ``jax.jit`` + ``jax.value_and_grad`` + ``optimizer.stateless_apply``.

The state is held by the step as arrays (donated to each call) and written back to the Keras
variables by ``sync()`` before anything reads them (checkpoints, sample grids); ``reset()``
reads them again after a restore. On several devices the batch is sharded over the mesh
(``Placement.shard``) and the one jitted program runs over the global batch. Imported only when
Keras runs on JAX.
"""

from __future__ import annotations

from typing import Callable

import jax
import keras

from age_cgan.backend.forward import read_values, run_loss


class JaxStep:
    """JAX: model and optimiser values held as arrays between steps."""

    def __init__(self, step, jit: bool):
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
        metrics = {}
        for update in self.step.updates:
            name = update.model

            def loss_fn(trainable):
                return run_loss(update, self.step.models, values, trainable, batch)

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


def compile_function(fn: Callable, jit: bool = True) -> Callable:
    return jax.jit(fn) if jit else fn


def value_and_grad(fn: Callable, jit: bool = True) -> Callable:
    return compile_function(jax.value_and_grad(fn), jit)
