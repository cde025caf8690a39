"""``difference``: the photo plus G's change between ages at the photo's pivot (beyond the paper).

The latents of Age-cGAN are only as good as G's knowledge of the person, and a CPU-trained G
reconstructs a stranger (z0 same-person ~5%, see the shared measurements). ``difference`` keeps
the photo and adds what G changes between ages at the photo's pivot:
x + s * (G(z*, y) - G(z*, y_src)) with z* = z*_pixel, so the person comes from the photo and
the aging from G. On a greyscale photo the change is added to its brightness only (a colour G
would otherwise tint it).
"""

from __future__ import annotations

import numpy as np


def difference_changes(models, z, sources, categories, strength: float,
                       batch_size: int = 256) -> np.ndarray:
    """s * (G(z_i, y) - G(z_i, y_src,i)) for each face i (z (B, z_dim), sources (B,)) and each
    category y of ``categories``: float32 (B, n, S, S, 3) in [-1, 1] units."""
    outputs = models.generate_batch(z, categories, batch_size)
    pivot = models.generate_batch(z, None, batch_size, per_face=sources)  # (B, 1, ...)
    return strength * (outputs - pivot)
