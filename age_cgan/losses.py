"""Loss functions shared by the training stages and per-image latent optimisation.

All take and return backend tensors (keras.ops only). Convention: the discriminator returns
probabilities (sigmoid), real = 1; every loss is a mean over the batch.
"""

from keras import ops

REAL_LABEL = 0.9  # one-sided label smoothing for real pairs (book)
FAKE_LABEL = 0.0


def bce(probabilities, target: float):
    """Binary cross-entropy of probabilities (B, 1) against a constant target, batch mean."""
    probabilities = ops.cast(probabilities, "float32")
    return ops.mean(ops.binary_crossentropy(ops.full_like(probabilities, target), probabilities))


def discriminator_loss(p_real, p_fake):
    """D: real pairs towards 0.9 (smoothed), generated pairs towards 0."""
    return bce(p_real, REAL_LABEL) + bce(p_fake, FAKE_LABEL)


def generator_loss(p_fake):
    """G, non-saturating: generated pairs towards 1 (the unsmoothed real label)."""
    return bce(p_fake, 1.0)


def euclidean_per_sample(a, b):
    """Euclidean distance between rows of (B, ...) tensors -> (B,)."""
    a = ops.reshape(ops.cast(a, "float32"), (ops.shape(a)[0], -1))
    b = ops.reshape(ops.cast(b, "float32"), (ops.shape(b)[0], -1))
    return ops.sqrt(ops.sum(ops.square(a - b), axis=-1) + 1e-12)


def euclidean(a, b):
    """Per-sample Euclidean distance between rows of (B, ...) tensors, batch mean."""
    return ops.mean(euclidean_per_sample(a, b))


def latent_loss(z_pred, z_true):
    """Stage 2 (book, paper): per-sample Euclidean distance in z; an all-zeros E scores ~9.97."""
    return euclidean(z_pred, z_true)


def identity_loss(embedding_a, embedding_b):
    """Stage 3 / z*_IP (paper): Euclidean distance between FR embeddings (unit norm, so 0..2)."""
    return euclidean(embedding_a, embedding_b)


def identity_loss_per_sample(embedding_a, embedding_b):
    """``identity_loss`` of each sample -> (B,) (per-image latent optimisation of a batch)."""
    return euclidean_per_sample(embedding_a, embedding_b)


def pixel_loss_per_sample(image_a, image_b):
    """``pixel_loss`` of each sample -> (B,): the mean squared difference over its pixels."""
    a, b = ops.cast(image_a, "float32"), ops.cast(image_b, "float32")
    return ops.mean(ops.reshape(ops.square(a - b), (ops.shape(a)[0], -1)), axis=-1)


def pixel_loss(image_a, image_b):
    """z*_pixel (paper): mean squared pixel difference between images in [-1, 1] (every sample
    has as many pixels, so the batch mean of ``pixel_loss_per_sample`` is the overall mean)."""
    return ops.mean(pixel_loss_per_sample(image_a, image_b))
