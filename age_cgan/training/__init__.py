"""Training: the stages, the step loop, and the orchestration that runs them.

``stage`` (what a stage is, and its declaration of what it needs and trains), ``stages`` (the
GAN, the encoder, identity), ``face_recognizer`` (stage fr), ``graph`` (the stage graph, from
those declarations), ``loop`` (the step loop), ``orchestration`` (resolve, check, plan, run in
order, resume or refuse), ``checkpoint``, ``logging`` and ``recipe`` (a whole model by one
command). The compiled steps come from ``age_cgan.backend``, below this package.
"""

from age_cgan.training.graph import STAGE_CLASSES, maker_of
from age_cgan.training.loop import NonFiniteLoss, OutOfMemory, TrainingInterrupted
from age_cgan.training.orchestration import (format_plan, load_data, plan, resolve_config,
                                             run_stage, train, train_face_recognizer)

__all__ = ["NonFiniteLoss", "OutOfMemory", "STAGE_CLASSES", "TrainingInterrupted", "format_plan",
           "load_data", "maker_of", "plan", "resolve_config", "run_stage", "train",
           "train_face_recognizer"]
