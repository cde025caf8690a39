"""The latents of the paper's methods for test faces: z0 = E(x), z*_pixel and z*_IP.

Shared by the two users of the networks' latents: the identity table (``export``, each
method's reconstructions) and the aging section (``aging``, which reuses a latent the table
found rather than optimise it twice). Numpy only here; the networks come in with the
``age_cgan.aging.AgingModels`` passed."""

from __future__ import annotations

import numpy as np

from age_cgan.evaluation.settings import METHODS, EvalSettings


def find_latents(models, method: str, faces, categories, settings: EvalSettings):
    """The latents of ``method`` ("z0", "z*_pixel", "z*_IP") for uint8 faces (N, S, S, 3) at
    their categories (N,), with an ``age_cgan.aging.AgingModels``: z0 = E(x); z*_pixel and
    z*_IP its per-image optimisation from z0, ``settings.batch_size`` faces at a time.
    Returns (z (N, z_dim), the optimisation's losses (steps + 1, N) or None for z0)."""
    batch = settings.batch_size
    z0 = np.concatenate([np.asarray(models.encode(faces[i:i + batch]), np.float32)
                         for i in range(0, len(faces), batch)])
    mode = METHODS[method]
    if mode == "none":
        return z0, None
    steps = settings.pixel_steps if mode == "pixel" else settings.identity_steps
    return models.optimize_latents(faces, z0, categories, mode, steps,
                                   progress=settings.progress, batch_size=batch, desc=method)
