"""A face at every age: a face crop -> each per-photo method -> the face at each category.

``models`` loads a model folder's networks (``AgingModels``) and runs any method by name;
``methods`` names them; ``prototype`` moves the photo by the difference between two age
prototypes (averages of real faces); ``network`` is the image-to-image aging network (the photo
plus its change); both start from the age estimator's guess of the person's own category; ``latent`` is
Age-cGAN's per-image latent optimisation (z0, z*_pixel, z*_IP) and ``difference`` the photo
plus G's change at the z*_pixel pivot; ``result`` holds ``AgedFace`` and adds a change to the
photo at the crop's own resolution.
"""

from age_cgan.aging.methods import (CHANGE_METHODS, DEFAULT_STEPS, DEFAULT_STRENGTH,
                                    FALLBACK_METHOD, LATENT_MODE, LEARNING_RATE, METHOD_TITLES,
                                    METHODS, OPTIMIZE_MODES, PHOTO_METHODS, check_method)
from age_cgan.aging.models import AgingModels
from age_cgan.aging.result import AgedFace, add_change

__all__ = ["AgedFace", "AgingModels", "CHANGE_METHODS", "DEFAULT_STEPS", "DEFAULT_STRENGTH",
           "FALLBACK_METHOD", "LATENT_MODE", "LEARNING_RATE", "METHODS", "METHOD_TITLES",
           "OPTIMIZE_MODES", "PHOTO_METHODS", "add_change", "check_method"]
