"""The measurements, each a small pure-numpy module on hand-made or judged inputs: ages
(``age``), same-person rates (``identity``), distribution statistics (``statistics``) and
verification of labelled pairs (``verification``)."""

from age_cgan.evaluation.metrics.age import age_metrics, confusion, relative_gap
from age_cgan.evaluation.metrics.identity import identity_metrics
from age_cgan.evaluation.metrics.statistics import frechet_distance, mean_pairwise_distance
from age_cgan.evaluation.metrics.verification import pair_verification, roc_auc

__all__ = ["age_metrics", "confusion", "frechet_distance", "identity_metrics",
           "mean_pairwise_distance", "pair_verification", "relative_gap", "roc_auc"]
