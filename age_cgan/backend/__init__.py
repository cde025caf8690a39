"""The backend layer, below training and inference: the only package that names TensorFlow
or JAX.

* ``forward``: ``Forward`` (stateless model calls) and ``Update`` (one network's loss): what a
  stage's loss is written over, once for every backend;
* ``step``: ``Step``, those updates compiled by the backend's engine (``tensorflow_step``:
  ``tf.function`` + ``tf.GradientTape``; ``jax_step``: ``jax.jit``), and ``value_and_grad`` for
  per-photo latent optimisation; ``UnsupportedBackend`` for any other Keras backend;
* ``devices``: ``Placement``, data parallelism from the backend's own engine
  (``keras.distribution.DataParallel`` on JAX, ``MirroredStrategy`` on TensorFlow).

Training (``age_cgan.training``) and inference (``age_cgan.aging``) build on it; it imports
nothing of theirs.
"""

from age_cgan.backend.forward import Forward, Update, read_values
from age_cgan.backend.step import (BACKEND, Step, UnsupportedBackend, compile_function, engine,
                                   value_and_grad)

__all__ = ["BACKEND", "Forward", "Step", "UnsupportedBackend", "Update", "compile_function",
           "engine", "read_values", "value_and_grad"]
