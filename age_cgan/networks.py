"""The four Age-cGAN networks as Keras 3 functional models (backend-agnostic: keras.ops only).

Defaults reproduce the tutorial architecture of "Generative Adversarial Networks Projects",
chapter 3 (see shared/docs/reference.md): encoder 18,287,268, generator 34,885,251 and
discriminator 1,569,665 parameters for 64x64x3 faces, z of 100 and six age categories.

Conventions: images are float32 in [-1, 1], shape (B, H, W, 3); ages are one-hot (B, num_ages);
the discriminator returns the probability that (image, age) is a real pair (sigmoid, real = 1).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from age_cgan.errors import AgeCganError, setting

Z_DIM = 100  # tutorial / paper latent size
IMAGE_SIZE = 64  # tutorial face size
NUM_AGES = 6  # the paper's categories; see age_cgan.ages
FR_INPUT_SIZE = 160  # backbone input; the book upsamples 3x to 192, 160 is the FaceNet size
EMBEDDING_DIM = 128  # FR embedding size (tutorial)


class WeightsUnavailable(AgeCganError, RuntimeError):
    """Pretrained weights could not be fetched; the message says how to pass a local file."""


@keras.saving.register_keras_serializable(package="age_cgan")
class TileAge(layers.Layer):
    """Concatenate an age one-hot, tiled over the feature map's height and width.

    Inputs ``[features (B, H, W, C), age (B, A)]`` -> ``(B, H, W, C + A)``. H and W come from
    the features, so the tiling follows the image size (the book hard-codes 32x32).
    """

    def call(self, inputs):
        features, age = inputs
        shape = ops.shape(features)
        age = ops.cast(age, features.dtype)
        tiled = ops.broadcast_to(age[:, None, None, :], (shape[0], shape[1], shape[2], age.shape[-1]))
        return ops.concatenate([features, tiled], axis=-1)

    def compute_output_shape(self, input_shapes):
        features, age = input_shapes
        return (*features[:-1], features[-1] + age[-1])


def l2_normalize(x, epsilon=1e-10):
    """Rows of x (..., D) scaled to unit Euclidean norm, in float32."""
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


@keras.saving.register_keras_serializable(package="age_cgan")
class L2Normalize(layers.Layer):
    """Scale each row to unit Euclidean norm (the FR embedding lives on the unit sphere)."""

    def __init__(self, epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        return l2_normalize(x, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _conv_block(x, filters, kernel, strides, batch_norm, name, momentum=0.99):
    """Conv2D (same padding) [+ BatchNorm] + LeakyReLU(0.2): the block every network repeats."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.LeakyReLU(negative_slope=0.2, name=f"{name}_lrelu")(x)


#: Width and depth of each network per architecture. "tutorial" is the book's (the default of
#: train.py, with the reference parameter counts above); "lite" is sized for a 2-core CPU: a 4x4
#: generator base with three 3x3 blocks that each see the age again (conditioning the CPU-sized
#: generator can not learn to ignore), an encoder without the 4096-unit layer, a discriminator of
#: half the width, and a small CNN face recogniser on the 64 px face instead of InceptionResNetV2
#: at 160 px. Encoder + generator: 4.4M parameters (the tutorial's: 53M). The image-to-image
#: aging networks (age estimator, aging network T and its patch discriminator) have a lite size
#: that keeps the shipped model under 25 MB, and a tutorial size twice as wide.
ARCHITECTURES = {
    "tutorial": {
        "encoder": {"filters": (32, 64, 128, 256), "kernel": 5, "fc_units": 4096},
        "generator": {"base_filters": 256, "filters": (128, 64), "kernel": 5, "fc_units": 2048,
                      "age_every_block": False, "transpose": False},
        "discriminator": {"filters": (64, 128, 256, 512)},
        "face_recognizer": {"backbone": "inception_resnet_v2"},
        "age_estimator": {"filters": (32, 64, 128, 256)},
        "aging_network": {"filters": (32, 64, 128), "bottleneck": 192, "residual_blocks": 3},
    },
    "lite": {
        "encoder": {"filters": (32, 64, 128, 256), "kernel": 5, "fc_units": 512},
        "generator": {"base_filters": 256, "filters": (128, 64, 32), "kernel": 4,
                      "fc_units": None, "age_every_block": True, "transpose": True},
        "discriminator": {"filters": (32, 64, 128, 256)},
        "face_recognizer": {"backbone": "small"},
        "age_estimator": {"filters": (24, 48, 96, 192)},
        "aging_network": {"filters": (16, 32, 64), "bottleneck": 128, "residual_blocks": 2},
    },
}


def architecture(arch: str, network: str) -> dict:
    """The builder arguments of ``network`` in architecture ``arch`` (see ARCHITECTURES)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    return dict(ARCHITECTURES[arch][network])


def build_encoder(image_size: int = IMAGE_SIZE, z_dim: int = Z_DIM, arch: str = "tutorial",
                  ) -> keras.Model:
    """Encoder E: face (B, S, S, 3) in [-1, 1] -> latent z (B, z_dim), no activation."""
    spec = architecture(arch, "encoder")
    image = keras.Input((image_size, image_size, 3), name="image")
    x = image
    for i, filters in enumerate(spec["filters"]):  # (S/2 .. S/16) x (32 .. 256)
        x = _conv_block(x, filters, spec["kernel"], 2, batch_norm=i > 0, name=f"block{i + 1}")
    x = layers.Flatten(name="flatten")(x)  # (S/16)^2 * 256
    x = layers.Dense(spec["fc_units"], name="fc")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name="fc_lrelu")(x)
    z = layers.Dense(z_dim, name="z")(x)
    return keras.Model(image, z, name="encoder")


def build_generator(
    z_dim: int = Z_DIM, num_ages: int = NUM_AGES, image_size: int = IMAGE_SIZE, dropout: float = 0.2,
    arch: str = "tutorial",
) -> keras.Model:
    """Generator G: (z (B, z_dim), age one-hot (B, num_ages)) -> face (B, S, S, 3) in [-1, 1].

    A dense projection to (S / 2^(n+1), S / 2^(n+1), base_filters), then n upsample + conv
    blocks and a last upsample + conv to RGB (tutorial: n = 2, base S/8; lite: n = 3, base S/16,
    the age tiled into every block's input).
    """
    spec = architecture(arch, "generator")
    factor = 2 ** (len(spec["filters"]) + 1)
    if image_size % factor:
        raise ValueError(f"image_size must be a multiple of {factor}, got {image_size}")
    base = image_size // factor
    z = keras.Input((z_dim,), name="z")
    age = keras.Input((num_ages,), name="age")
    x = layers.Concatenate(name="z_age")([z, age])
    if spec["fc_units"]:
        x = layers.Dense(spec["fc_units"], name="fc1")(x)
        x = layers.LeakyReLU(negative_slope=0.2, name="fc1_lrelu")(x)
        x = layers.Dropout(dropout, name="fc1_dropout")(x)
    x = layers.Dense(spec["base_filters"] * base * base, name="fc2")(x)
    x = layers.BatchNormalization(name="fc2_bn")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name="fc2_lrelu")(x)
    x = layers.Dropout(dropout, name="fc2_dropout")(x)
    x = layers.Reshape((base, base, spec["base_filters"]), name="reshape")(x)
    kernel = spec["kernel"]
    for i, filters in enumerate(spec["filters"]):  # each block doubles the side
        if spec["age_every_block"]:
            x = TileAge(name=f"tile_age{i + 1}")([x, age])
        if spec["transpose"]:  # a strided transposed convolution: no upsampled copy to convolve
            x = layers.Conv2DTranspose(filters, kernel, 2, padding="same", name=f"block{i + 1}_conv")(x)
            x = layers.BatchNormalization(momentum=0.8, name=f"block{i + 1}_bn")(x)
            x = layers.LeakyReLU(negative_slope=0.2, name=f"block{i + 1}_lrelu")(x)
        else:
            x = layers.UpSampling2D(2, name=f"up{i + 1}")(x)
            x = _conv_block(x, filters, kernel, 1, batch_norm=True, name=f"block{i + 1}",
                            momentum=0.8)
    if spec["transpose"]:  # (S, S, 3)
        x = layers.Conv2DTranspose(3, kernel, 2, padding="same", name="to_rgb")(x)
    else:
        x = layers.UpSampling2D(2, name=f"up{len(spec['filters']) + 1}")(x)  # (S, S, last)
        x = layers.Conv2D(3, kernel, padding="same", name="to_rgb")(x)
    image = layers.Activation("tanh", dtype="float32", name="image")(x)
    return keras.Model([z, age], image, name="generator")


def build_discriminator(image_size: int = IMAGE_SIZE, num_ages: int = NUM_AGES,
                        arch: str = "tutorial") -> keras.Model:
    """Discriminator D: (image (B, S, S, 3), age one-hot (B, A)) -> P(real pair) (B, 1).

    The age is tiled over the first convolution's output (S/2 x S/2) and concatenated there.
    """
    first, *rest = architecture(arch, "discriminator")["filters"]
    image = keras.Input((image_size, image_size, 3), name="image")
    age = keras.Input((num_ages,), name="age")
    x = _conv_block(image, first, 3, 2, batch_norm=False, name="block1")  # (S/2, S/2, first)
    x = TileAge(name="tile_age")([x, age])  # (S/2, S/2, first + A)
    for i, filters in enumerate(rest):  # down to (S/16, S/16, last)
        x = _conv_block(x, filters, 3, 2, batch_norm=True, name=f"block{i + 2}")
    x = layers.Flatten(name="flatten")(x)
    p = layers.Dense(1, activation="sigmoid", dtype="float32", name="p_real")(x)
    return keras.Model([image, age], p, name="discriminator")


def _small_face_backbone(face):
    """The lite FR's backbone on the face itself: four stages of two 3x3 convolutions (the
    second with stride 2), 64 px -> (4, 4, 256) -> flattened (4096)."""
    x = face
    for i, filters in enumerate((32, 64, 128, 256)):
        x = _conv_block(x, filters, 3, 1, batch_norm=True, name=f"fr{i + 1}a")
        x = _conv_block(x, filters, 3, 2, batch_norm=True, name=f"fr{i + 1}b")
    return layers.Flatten(name="flatten")(x)


def build_face_recognizer(
    image_size: int = IMAGE_SIZE,
    weights: str | None = None,
    input_size: int = FR_INPUT_SIZE,
    embedding_dim: int = EMBEDDING_DIM,
    arch: str = "tutorial",
) -> keras.Model:
    """Face recogniser FR: face (B, S, S, 3) in [-1, 1] -> unit-norm embedding (B, 128).

    InceptionResNetV2 (no top, average pooling) on the face resized in-model to
    ``input_size``; its expected input range is [-1, 1], which our faces already have.
    ``weights``: "imagenet" (downloaded by Keras), None (random), or a path to a local
    InceptionResNetV2 no-top weights file (.h5 / .weights.h5). ``arch="lite"`` replaces the
    backbone by a small CNN on the face itself (no input resize; ``weights`` must be None).
    """
    if architecture(arch, "face_recognizer")["backbone"] == "small":
        if weights not in (None, "none"):
            raise ValueError(f"the lite face recogniser has no pretrained backbone (weights="
                             f"{weights!r}): it is trained from scratch by the FR stage")
        face = keras.Input((image_size, image_size, 3), name="image")
        x = layers.Dense(embedding_dim, name="embedding")(_small_face_backbone(face))
        embedding = L2Normalize(dtype="float32", name="l2_normalize")(x)
        return keras.Model(face, embedding, name="face_recognizer")
    backbone_weights = "imagenet" if weights == "imagenet" else None
    try:
        backbone = keras.applications.InceptionResNetV2(
            include_top=False,
            weights=backbone_weights,
            input_shape=(input_size, input_size, 3),
            pooling="avg",
        )
    except Exception as error:  # download failures surface as many exception types
        if backbone_weights != "imagenet":
            raise
        raise WeightsUnavailable(
            "could not download the ImageNet weights of InceptionResNetV2 "
            f"({type(error).__name__}: {error}). Offline, download "
            "'inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5' elsewhere and "
            f"pass its path ({setting('fr_weights', 'PATH')}), or use "
            f"{setting('fr_weights', 'none')}."
        ) from error
    if weights not in (None, "imagenet", "none"):
        backbone.load_weights(weights)
    face = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize")(face)
    x = backbone(x)  # (B, 1536)
    x = layers.Dense(embedding_dim, name="embedding")(x)
    embedding = L2Normalize(dtype="float32", name="l2_normalize")(x)
    return keras.Model(face, embedding, name="face_recognizer")


# =========================================================================== image-to-image aging
# Beyond the paper: the line of work that followed Age-cGAN (IPCGAN, Wang et al. 2018; HRFAE,
# Yao et al. 2021; FRAN, Zoss et al. 2022) conditions the generator on the photo itself and
# predicts a change that is added to it, so the person comes from the photo.


def build_age_estimator(image_size: int = IMAGE_SIZE, num_ages: int = NUM_AGES,
                        arch: str = "tutorial") -> keras.Model:
    """Age estimator A: face (B, S, S, 3) in [-1, 1] -> [category probabilities (B, A)
    (softmax), years (B, 1)].

    Four VGG-style stages (two 3x3 conv + BN + LeakyReLU, then 2x2 max pooling), global
    average pooling, dropout, and two heads. Trained on the training split's own age labels
    (``training.aging_stages.AgeEstimatorStage``), never on a judge's verdicts.
    """
    image = keras.Input((image_size, image_size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="pool")(_age_trunk(image, arch))
    x = layers.Dropout(0.3, name="dropout")(x)
    probabilities = layers.Dense(num_ages, activation="softmax", dtype="float32",
                                 name="category")(x)
    years = layers.Dense(1, dtype="float32", name="years")(x)
    return keras.Model(image, [probabilities, years], name="age_estimator")


@keras.saving.register_keras_serializable(package="age_cgan")
class LightAndColour(layers.Layer):
    """The aging network's change from two maps: ``[photo (B, S, S, 3), maps (B, S, S, 2)]`` ->
    change (B, S, S, 3) = brightness + tanh(saturation) * (the photo's own colour apart from
    its brightness) * -1.

    Aging is mostly a change of light and shape, and of colour only towards grey (hair) or
    along the face's own hue (spots, redness), never a new hue: with this parametrisation the
    change can brighten, darken, desaturate (saturation > 0) or deepen the photo's own colours
    (< 0), but it cannot paint purple or green patterns, and a greyscale photo gets a
    brightness change alone.
    """

    def call(self, inputs):
        photo, maps = inputs
        maps = ops.cast(maps, photo.dtype)
        colour = photo - ops.mean(photo, axis=-1, keepdims=True)
        return maps[..., :1] - ops.tanh(maps[..., 1:2]) * colour

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


def _norm_block(x, filters, strides, name):
    """Conv 3x3 + GroupNorm(8) + LeakyReLU: the aging network's block (no batch statistics,
    so one photo at inference is treated as a batch of 32 was in training)."""
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", name=f"{name}_conv")(x)
    x = layers.GroupNormalization(8, name=f"{name}_norm")(x)
    return layers.LeakyReLU(negative_slope=0.2, name=f"{name}_lrelu")(x)


def build_aging_network(image_size: int = IMAGE_SIZE, num_ages: int = NUM_AGES,
                        arch: str = "tutorial") -> keras.Model:
    """Aging network T: (photo (B, S, S, 3) in [-1, 1], own category one-hot (B, A), target
    one-hot (B, A)) -> change (B, S, S, 3), to be added to the photo (aged = photo + change).

    An encoder-decoder with skip connections (a U-Net, S -> S/8 and back), the two ages as
    constant planes at the input, the bottleneck and every decoder level, residual blocks at
    the bottleneck, and a last convolution initialised to zero, so that training starts at
    "the photo unchanged". That convolution gives two maps, brightness and saturation, which
    ``LightAndColour`` turns into the RGB change. The change is not clipped here: the caller
    adds it and clips.
    """
    spec = architecture(arch, "aging_network")
    image = keras.Input((image_size, image_size, 3), name="image")
    source = keras.Input((num_ages,), name="source")
    target = keras.Input((num_ages,), name="target")
    ages = layers.Concatenate(name="ages")([source, target])  # (B, 2A)
    x = TileAge(name="tile_in")([image, ages])  # (S, S, 3 + 2A)
    skips = []
    for i, filters in enumerate(spec["filters"]):  # S -> S/8
        x = _norm_block(x, filters, 1, name=f"enc{i + 1}a")
        skips.append(x)
        x = _norm_block(x, filters, 2, name=f"enc{i + 1}b")
    width = spec["bottleneck"]
    x = _norm_block(TileAge(name="tile_mid")([x, ages]), width, 1, name="mid")
    for i in range(spec["residual_blocks"]):  # (S/8, S/8, width)
        y = _norm_block(TileAge(name=f"tile_res{i + 1}")([x, ages]), width, 1, name=f"res{i + 1}a")
        y = layers.Conv2D(width, 3, padding="same", name=f"res{i + 1}b_conv")(y)
        x = layers.Add(name=f"res{i + 1}_add")([x, y])
    for i, filters in reversed(list(enumerate(spec["filters"]))):  # S/8 -> S
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{i + 1}")(x)
        x = layers.Concatenate(name=f"skip{i + 1}")([x, skips[i]])
        x = _norm_block(TileAge(name=f"tile_dec{i + 1}")([x, ages]), filters, 1,
                        name=f"dec{i + 1}")
    maps = layers.Conv2D(2, 3, padding="same", kernel_initializer="zeros",
                         bias_initializer="zeros", dtype="float32", name="light_and_colour")(x)
    change = LightAndColour(dtype="float32", name="change")([image, maps])
    return keras.Model([image, source, target], change, name="aging_network")


def _age_trunk(image, arch):
    """The age estimator's convolutional trunk (layer names ``age1a`` ...), 64 px -> S/16."""
    x = image
    for i, filters in enumerate(architecture(arch, "age_estimator")["filters"]):
        x = _conv_block(x, filters, 3, 1, batch_norm=True, name=f"age{i + 1}a")
        x = _conv_block(x, filters, 3, 1, batch_norm=True, name=f"age{i + 1}b")
        x = layers.MaxPooling2D(2, name=f"age{i + 1}_pool")(x)  # S/2^(i+1)
    return x


@keras.saving.register_keras_serializable(package="age_cgan")
class Projection(layers.Layer):
    """``[features (B, H, W, F), embedding (B, F)]`` -> their dot product at each cell
    (B, H, W, 1): the projection term of a conditional patch discriminator."""

    def call(self, inputs):
        features, embedding = inputs
        embedding = ops.cast(embedding, features.dtype)[:, None, None, :]
        return ops.sum(features * embedding, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shapes):
        return (*input_shapes[0][:-1], 1)


@keras.saving.register_keras_serializable(package="age_cgan")
class SpectralConv2D(layers.Layer):
    """A convolution whose kernel is divided by its largest singular value (spectral
    normalisation, Miyato et al. 2018), estimated by one power iteration per training call: the
    discriminator stays 1-Lipschitz per layer, so it cannot grow sharp enough to push the aging
    network into stripes (the 64 px discriminator without it did after ~1,250 steps)."""

    def __init__(self, filters, kernel_size, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(shape=(k, k, input_shape[-1], self.filters),
                                      initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self.u = self.add_weight(shape=(1, self.filters), trainable=False, name="u",
                                 initializer=keras.initializers.RandomNormal(seed=0))

    def call(self, inputs, training=False):
        w = ops.reshape(self.kernel, (-1, self.filters))  # (k*k*C, F)
        v = ops.stop_gradient(l2_normalize(ops.matmul(self.u, ops.transpose(w)), 1e-12))
        u = ops.stop_gradient(l2_normalize(ops.matmul(v, w), 1e-12))
        sigma = ops.sum(ops.matmul(v, w) * u)
        if training:
            self.u.assign(u)
        out = ops.conv(inputs, self.kernel / sigma, strides=self.strides, padding="same")
        return out + self.bias

    def compute_output_shape(self, input_shape):
        side = None if input_shape[1] is None else -(-input_shape[1] // self.strides)
        return (input_shape[0], side, side, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides}


def build_aging_discriminator(image_size: int = IMAGE_SIZE, num_ages: int = NUM_AGES,
                              arch: str = "tutorial") -> keras.Model:
    """Discriminator of the aging network: (image (B, S, S, 3), age one-hot (B, A)) -> realness
    logits (B, S/8, S/8, 1), LSGAN (real pair -> 1, fake -> 0; no sigmoid).

    A patch discriminator (PatchGAN, Isola et al. 2017) of spectrally normalised convolutions
    (``SpectralConv2D``, no batch statistics): three 4x4 stride-2 convolutions and a 3x3 one,
    each cell of the S/8 grid judging a patch of ~46 px, conditioned on the age by a projection
    (Miyato & Koyama 2018): each cell's logit plus the dot product of its features with an
    embedding of the age, so a real face shown with a wrong age can be called fake.
    """
    filters = architecture(arch, "aging_network")["filters"]
    image = keras.Input((image_size, image_size, 3), name="image")
    age = keras.Input((num_ages,), name="age")
    x = image
    for i, width in enumerate(filters):  # S -> S/8
        x = SpectralConv2D(width, 4, 2, name=f"d{i + 1}_conv")(x)
        x = layers.LeakyReLU(negative_slope=0.2, name=f"d{i + 1}_lrelu")(x)
    width = 2 * filters[-1]
    x = SpectralConv2D(width, 3, 1, name="d_last_conv")(x)
    x = layers.LeakyReLU(negative_slope=0.2, name="d_last_lrelu")(x)
    patches = SpectralConv2D(1, 1, 1, dtype="float32", name="patch_logits")(x)
    embedded = layers.Dense(width, use_bias=False, name="age_embedding")(age)  # (B, F)
    projection = Projection(name="projection")([x, embedded])  # (B, s, s, 1)
    logits = layers.Add(dtype="float32", name="logits")([patches, projection])
    return keras.Model([image, age], logits, name="aging_discriminator")
