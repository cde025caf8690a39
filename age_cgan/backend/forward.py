"""What a stage's loss sees: stateless model calls on given values, and one update's loss.

A training stage is written once as pure loss functions over ``Model.stateless_call``
(``Forward``); the per-backend steps (``tensorflow_step``, ``jax_step``) differentiate
``run_loss`` and apply the optimiser. Nothing here names a backend.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras


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


def run_loss(update, models, values, trainable, batch):
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
