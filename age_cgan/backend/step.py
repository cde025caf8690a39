"""``Step``: a stage's updates compiled for the backend Keras runs on, one engine per backend.

``Step(models, optimizers, updates)`` is called with a numpy batch and returns a dict of scalar
tensors; its updates run in order (e.g. D then G), each on the values the previous one left.
The engine is ``tensorflow_step`` (``tf.function`` + ``tf.GradientTape``, the default) or
``jax_step`` (``jax.jit``); another Keras backend is refused with ``UnsupportedBackend``.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Callable

import keras

from age_cgan.backend.forward import Update

BACKEND = keras.backend.backend()
ENGINES = {"tensorflow": "age_cgan.backend.tensorflow_step", "jax": "age_cgan.backend.jax_step"}


class UnsupportedBackend(RuntimeError):
    """Keras runs on a backend this project has no step for (torch, numpy, openvino)."""

    def __init__(self, backend: str):
        self.backend = backend
        super().__init__(f"the Keras backend {backend!r} is not supported: set KERAS_BACKEND "
                         f"to one of {', '.join(sorted(ENGINES))}")


def engine(backend: str = BACKEND):
    """The module that compiles steps and functions for ``backend`` (imported on first use, so
    TensorFlow is never imported on JAX and the other way round)."""
    if backend not in ENGINES:
        raise UnsupportedBackend(backend)
    return importlib.import_module(ENGINES[backend])


class Step:
    """A compiled training step: ``step(batch) -> dict of scalar tensors`` (call ``sync()``
    before reading the Keras variables)."""

    def __init__(self, models: dict, optimizers: dict, updates: list[Update], jit: bool = True,
                 placement=None):
        """``placement`` (backend.devices): the devices a batch is split over; None or one
        device is the single-device step. Networks and optimisers must have been created in
        ``placement.scope()``."""
        self.models, self.optimizers, self.updates = models, optimizers, list(updates)
        self.placement = placement if placement is not None and placement.distributed else None
        compiler = engine()
        with self.placement.scope() if self.placement else contextlib.nullcontext():
            for update in self.updates:
                optimizer = optimizers[update.model]
                if not optimizer.built:
                    optimizer.build(models[update.model].trainable_variables)
        if BACKEND == "jax":
            self._step = compiler.JaxStep(self, jit)
        elif self.placement is not None:
            self._step = compiler.distributed_step(self, jit, self.placement.strategy)
        else:
            self._step = compiler.single_step(self, jit)

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


def compile_function(fn: Callable, jit: bool = True) -> Callable:
    """Compile a pure keras.ops function for the backend (tf.function or jax.jit)."""
    return engine().compile_function(fn, jit)


def value_and_grad(fn: Callable, jit: bool = True) -> Callable:
    """``fn(x, *args) -> scalar`` (keras.ops) to a compiled ``(x, *args) -> (value, d value/dx)``.

    Used for per-image latent optimisation (z*_IP, z*_pixel), where x is the latent batch and
    the networks are frozen inside ``fn``.
    """
    return engine().value_and_grad(fn, jit)
