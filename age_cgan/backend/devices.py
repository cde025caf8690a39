"""Data parallelism: the devices a stage trains on, from the backend's own engine.

``Placement`` is what the loop and the step need to know about devices:

* JAX: ``keras.distribution.DataParallel`` over a one-axis mesh of the chosen devices. Networks
  and optimisers are created inside ``placement.scope()`` (their variables are replicated on
  every device), each batch is placed sharded over the mesh's batch axis (``shard``), and the
  jitted step (jax_step) is unchanged: ``jax.jit`` compiles one program over the global batch,
  so means (losses, BatchNorm statistics) are over the whole batch, as on one device.
  Multi-host: ``keras.distribution.initialize()`` (from ``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
  ``..._NUM_PROCESSES``, ``..._PROCESS_ID``) before anything else, one process per host; every
  process draws the same global batch and hands JAX its own rows; only process 0 writes.
* TensorFlow: ``tf.distribute.MirroredStrategy`` over the chosen GPUs (or logical CPUs); the
  step runs each update under ``strategy.run`` (see ``tensorflow_step.distributed_step``).

One device is ``Placement(1)``: no distribution at all, the exact single-device code path.
"""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np

from age_cgan.backend.step import BACKEND, UnsupportedBackend
from age_cgan.errors import SettingError, setting
ENV_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"


class DeviceError(SettingError):
    """A devices request this machine or this batch size cannot honour."""


def parse_devices(spec) -> int | str:
    """``"all"`` or a positive int, from the command line's or the config's value."""
    if isinstance(spec, str) and spec.strip().lower() == "all":
        return "all"
    try:
        count = int(spec)
    except (TypeError, ValueError):
        raise DeviceError(f"{setting('devices')} must be a positive number or 'all', got "
                          f"{spec!r}") from None
    if count < 1:
        raise DeviceError(f"{setting('devices')} must be a positive number or 'all', got "
                          f"{spec!r}")
    return count


def maybe_initialize_multi_host() -> None:
    """``keras.distribution.initialize()`` when the launcher set KERAS_DISTRIBUTION_* (JAX).

    Must run before JAX touches a device; a no-op for one process or on TensorFlow (where
    multi-worker training would be ``MultiWorkerMirroredStrategy``, not wired here).
    """
    if BACKEND == "jax" and int(os.environ.get(ENV_PROCESSES, "1")) > 1:
        import jax

        if not jax.distributed.is_initialized():
            keras.distribution.initialize()


def local_devices(spec) -> list:
    """The local devices ``spec`` ("all" or N) names: accelerators first, else CPUs.

    "all" on a machine without accelerators is one CPU device (virtual CPU devices exist only
    for tests; asking for them by number uses them).
    """
    spec = parse_devices(spec)
    if BACKEND == "jax":
        import jax

        accelerators = [d for d in jax.local_devices() if d.platform != "cpu"]
        cpus = jax.local_devices(backend="cpu")
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        accelerators = tf.config.list_logical_devices("GPU")
        cpus = tf.config.list_logical_devices("CPU")
    else:
        raise UnsupportedBackend(BACKEND)
    if spec == "all":
        return accelerators or cpus[:1]
    pool = accelerators or cpus
    if spec > len(pool):
        kind = "accelerators" if accelerators else "CPU devices"
        raise DeviceError(f"{setting('devices', spec)}: this machine has {len(pool)} {kind}")
    return pool[:spec]


class Placement:
    """Where a stage's variables live and how a global batch is split over devices.

    ``count``: devices over all processes; ``is_chief``: whether this process writes logs,
    grids, checkpoints and models (process 0).
    """

    def __init__(self, devices: list | None = None):
        self.devices = list(devices or [])
        self.processes, self.process_id = _processes()
        self.count = max(1, len(self.devices)) * self.processes
        self.is_chief = self.process_id == 0
        self.distribution = self.strategy = None
        if self.count > 1 and BACKEND == "jax":
            import jax

            mesh_devices = self.devices
            if self.processes > 1:  # every host contributes its first len(devices) devices
                platform, per_host = self.devices[0].platform, len(self.devices)
                mesh_devices = [d for p in range(self.processes) for d in
                                [x for x in jax.devices(platform) if x.process_index == p][:per_host]]
            self.distribution = keras.distribution.DataParallel(devices=list(mesh_devices))
        elif self.count > 1 and BACKEND == "tensorflow":
            import tensorflow as tf

            self.strategy = tf.distribute.MirroredStrategy(
                [d.name for d in self.devices], cross_device_ops=_cross_device_ops())

    @property
    def distributed(self) -> bool:
        return self.count > 1

    def check_batch(self, batch_size: int) -> None:
        check_batch(batch_size, self.count)

    def scope(self):
        """Create networks and optimisers inside this (replicated variables)."""
        if self.distribution is not None:
            return self.distribution.scope()
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    def shard(self, batch: dict) -> dict:
        """A numpy global batch -> arrays split over the mesh's batch axis (JAX); as is
        otherwise (TensorFlow splits inside the step, one device needs nothing)."""
        if self.distribution is None:
            return batch
        return {key: self._shard_array(np.asarray(value)) for key, value in batch.items()}

    def _shard_array(self, value):
        import jax

        layout = self.distribution.get_data_layout(value.shape).backend_layout
        if self.processes == 1:
            return jax.device_put(value, layout)
        rows = len(value) // self.processes  # every host drew the same global batch
        local = value[self.process_id * rows:(self.process_id + 1) * rows]
        return jax.make_array_from_process_local_data(layout, local)

    def describe(self) -> str:
        if not self.distributed:
            return "1 device"
        engine = "keras.distribution.DataParallel" if self.distribution else "MirroredStrategy"
        hosts = f" on {self.processes} hosts" if self.processes > 1 else ""
        return f"{self.count} devices{hosts} ({engine})"


def _processes() -> tuple[int, int]:
    if BACKEND == "jax":
        import jax

        return jax.process_count(), jax.process_index()
    return 1, 0


def device_count(spec="all", batch_size: int | None = None) -> int:
    """How many devices ``--devices spec`` trains on (over all hosts), checking that
    ``batch_size`` divides over them; builds no engine (for dry runs and the run's config)."""
    maybe_initialize_multi_host()
    count = len(local_devices(spec)) * _processes()[0]
    if batch_size is not None:
        check_batch(batch_size, count)
    return count


def check_batch(batch_size: int, count: int) -> None:
    """The global batch must split evenly: the same faces per device, every step."""
    if batch_size % count:
        below = batch_size - batch_size % count
        raise DeviceError(
            f"{setting('batch_size', batch_size)} does not divide over {count} devices: use a "
            f"multiple of {count} (e.g. {below or count} or {below + count})")


def placement(spec="all", batch_size: int | None = None) -> Placement:
    """The Placement for ``--devices spec``; checks that ``batch_size`` divides over it."""
    maybe_initialize_multi_host()
    result = Placement(local_devices(spec))
    if batch_size is not None:
        result.check_batch(batch_size)
    return result


def is_chief() -> bool:
    """Whether this process writes the run folder: process 0 (always, on one host)."""
    maybe_initialize_multi_host()
    return _processes()[1] == 0


__all__ = ["DeviceError", "Placement", "check_batch", "device_count", "is_chief",
           "local_devices", "maybe_initialize_multi_host", "parse_devices", "placement"]


def _cross_device_ops():
    import tensorflow as tf

    return tf.distribute.ReductionToOneDevice()
