"""The per-photo methods by name, and what each needs.

``prototype`` moves the photo itself by the difference between two age prototypes (averages of
real faces: shape, colour, texture; ``aging.prototype``), at the photo's own resolution.
``network`` is the image-to-image aging network T: the photo plus T's change from the person's
own category to each target (``aging.network``). The others
are Age-cGAN's, kept exactly as the reproduction: ``none`` = z0 = E(x), ``pixel`` / ``identity``
= the paper's z*_pixel / z*_IP (``aging.latent``), ``difference`` = the photo plus G's change at
the z*_pixel pivot (``aging.difference``).
"""

from __future__ import annotations

#: Age-cGAN's methods (the reproduction), then the aging network.
OPTIMIZE_MODES = ("none", "pixel", "identity", "difference")
#: Every per-photo method by name; evaluation, infer and the page list these.
METHODS = (*OPTIMIZE_MODES, "network", "prototype")
#: What each method's name means in tables and pages.
METHOD_TITLES = {"none": "z0 = E(x)", "pixel": "z*_pixel", "identity": "z*_IP",
                 "difference": "photo + G's age difference",
                 "network": "photo + the aging network's change",
                 "prototype": "photo moved by the age prototypes"}
#: The networks (``AgingModels`` attributes) each method needs: a model that lacks one cannot
#: run the method (``AgingModels.unavailable_reason``; infer, the page and evaluate ask it).
#: ``identity`` needs a trained face recogniser: an untrained one gives noise.
METHOD_NEEDS = {"none": ("encoder", "generator"), "pixel": ("encoder", "generator"),
                "identity": ("encoder", "generator", "face_recognizer"),
                "difference": ("encoder", "generator"),
                "network": ("aging_network", "age_estimator"),
                "prototype": ("prototypes", "age_estimator")}
#: What each method is, in a sentence (help texts and the page; the default method first).
METHOD_HELP = {"prototype": "the photo itself moved by the difference between averages of "
               "real faces of its own age and the target age, in shape, colour and texture "
               "(photo-like; the shipped model's default; fast)",
               "network": "the photo plus the aging network's change from the person's own "
               "age (the default of a model without age prototypes; fast)",
               "none": "Age-cGAN's z0 = E(x): the generator's face from the encoder's latent "
               "(fast, not the same person)",
               "pixel": "Age-cGAN's z*_pixel: the latent fitted to the photo's pixels first "
               "(slower)",
               "identity": "Age-cGAN's z*_IP: the latent fitted to the photo's identity by "
               "the face recogniser (slowest; needs a trained one)",
               "difference": "the photo plus the generator's age change at the z*_pixel "
               "latent"}
#: Methods whose output is the photo plus a change (which infer adds at the crop's own size).
CHANGE_METHODS = ("difference", "network")
#: Methods that age the photo itself from the person's own category (the estimator's guess):
#: their aged faces are the photo, changed at the crop's own size.
PHOTO_METHODS = ("difference", "network", "prototype")
#: Adam updates per face. Identity: ~0.43 s a step on the shared 2-core CPU (G, then FR =
#: InceptionResNetV2 at 160 px, forward and back), so 50 steps take ~22 s, inside the < 30 s
#: target; a pixel step (G only) takes ~80 ms. See benchmarks/bench_infer.py. ``difference``
#: optimises its pivot as ``pixel`` does; ``network`` optimises nothing.
DEFAULT_STEPS = {"none": 0, "pixel": 100, "identity": 50, "difference": 100, "network": 0,
                 "prototype": 0}
#: The latent each method optimises (``difference`` adds G's change at its z*_pixel pivot;
#: ``network`` has none).
LATENT_MODE = {"none": "none", "pixel": "pixel", "identity": "identity", "difference": "pixel",
               "network": None, "prototype": None}
#: How much of the change ``difference`` and ``network`` add to the photo.
DEFAULT_STRENGTH = 1.0
#: The strengths a user may ask for: 0 adds nothing, a negative one reverses the ages and
#: beyond 3 the change saturates the face into noise (the shipped model was chosen among
#: 1-2, tools/choose_strength.py).
STRENGTH_RANGE = (0.0, 3.0)
#: Adam moves each coordinate of z (~N(0, 1)) by at most about this much a step.
LEARNING_RATE = 0.02
#: The Age-cGAN method a model without an aging network falls back to, when its config names
#: none (an older package names ``difference``).
FALLBACK_METHOD = "none"


def strength_problem(strength: float | None) -> str | None:
    """Why ``strength`` cannot be used (outside ``STRENGTH_RANGE``, or not a number), or None;
    None (the model's own) is fine."""
    low, high = STRENGTH_RANGE
    if strength is None or low <= strength <= high:  # NaN fails both comparisons
        return None
    return (f"must be between {low:g} and {high:g} (0 changes nothing, 1 is the model's "
            f"chosen amount), got {strength:g}")


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"the per-photo method must be one of {', '.join(METHODS)}, "
                         f"not {method!r}")
