"""The stage graph, derived from the stages' own declarations (``Stage.needs`` / ``trains``).

``STAGE_CLASSES`` lists the stages in the order a whole model is trained (1, 2, fr, 3, then
the image-to-image age and aging); from
it come which stage trains a network (``maker_of``, used by the hints that name a stage to run
first), what a stage lacks in a run folder (``missing_models``), and the check that a command's
stages can run in its order (``check_ready``). Nothing here restates what a stage needs.
"""

from __future__ import annotations

from age_cgan.config import group_of
from age_cgan.errors import setting, trained_by
from age_cgan.runs import MissingModel, RunFolder
from age_cgan.training.aging_stages import AgeEstimatorStage, AgingStage
from age_cgan.training.face_recognizer import FaceRecognizerStage
from age_cgan.training.stages import Stage1, Stage2, Stage3

STAGE_CLASSES = {cls.name: cls for cls in (Stage1, Stage2, FaceRecognizerStage, Stage3,
                                           AgeEstimatorStage, AgingStage)}


def maker_of(network: str) -> str:
    """The first stage (in training order) that trains ``network``: where it comes from."""
    for name, cls in STAGE_CLASSES.items():
        if network in cls.trains:
            return name
    raise KeyError(f"no stage trains a network called {network!r}")


def missing_models(run: RunFolder, stage: str, config) -> list[str]:
    """What ``stage`` needs with ``config`` and the run folder lacks."""
    return [name for name in STAGE_CLASSES[stage].needs_for(config) if not run.has_model(name)]


def check_ready(run: RunFolder, stages, config) -> None:
    """Fail before any work when a stage lacks what no earlier stage of this command trains."""
    made = set()
    for stage in stages:
        missing = [m for m in missing_models(run, stage, config) if m not in made]
        if missing:
            needed = ", ".join(f"models/{m}.keras" for m in missing)
            raise MissingModel(
                f"stage {stage} needs {needed} in {run.path}, which an earlier stage writes: "
                f"run {trained_by(missing[0], run=str(run.path))} first (or "
                f"{setting('stage', group_of(maker_of(missing[0]), stage))}).", missing[0])
        made.update(STAGE_CLASSES[stage].trains_for(config))


__all__ = ["STAGE_CLASSES", "check_ready", "maker_of", "missing_models"]
