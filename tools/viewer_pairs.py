"""A blind viewer test of aged photos: make sheets of pairs, then score a viewer's answers.

    python tools/viewer_pairs.py make ~/data/utkface200test --use choose --target 60+ --pairs 20 --out viewer/60
    python tools/viewer_pairs.py score viewer/60/key.json answers.txt

``make`` ages photos as ``infer.py`` does (detection, the crop at the photo's own size, the
model's guess of the own age, the method) and lays out numbered pairs: a real photo of the
target category and a photo of someone younger or older aged to it (19-39 for 50-59 and 60+,
40+ for 0-18), the same gender where the file names say, the real one's side drawn at random.
The sheets go to OUT/sheets/ and the key to OUT/key.json: show a viewer the sheets only and ask,
for each pair, which photo is the real one (A or B) and what gave the other away. ``score``
prints how often they named the real photo: 50% means the aged photos pass for real ones.
The photos: UTKFace names (AGE_GENDER_RACE_...) or a manifest.csv with filename, age, gender
(and use). Nothing is overwritten without --overwrite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: Pairs drawn beyond --pairs, used where a photo of a pair yields no face.
SPARE = 8
sys.path.insert(0, str(REPO))


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="tools/viewer_pairs.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{make,score}",
                           help="make: age photos and lay out the sheets and the key; score: "
                           "count a viewer's answers against the key")
    make = sub.add_parser("make", help="age photos and write the sheets and the key")
    make.add_argument("photos", type=Path, help="a folder of labelled photos")
    make.add_argument("--target", required=True, help="the age category of every pair, e.g. 60+")
    make.add_argument("--pairs", type=int, default=20, help="pairs on the sheets")
    make.add_argument("--out", type=Path, required=True, help="the folder for sheets/ and key.json")
    make.add_argument("--use", help="only the manifest's rows with this 'use' (choose, report)")
    make.add_argument("--method", help="the aging method (default: the model's own)")
    make.add_argument("--model", help="a model folder (default: the shipped model)")
    make.add_argument("--strength", type=float, help="the method's strength (default: the model's)")
    make.add_argument("--prototype-strengths", metavar="JSON", help="the prototype method's "
                      "parts instead of the model's, e.g. '{\"colour\": 1.5}' (to choose them "
                      "on the 'choose' photos)")
    make.add_argument("--seed", type=int, default=0, help="seeds the pairs and the sides")
    make.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    score = sub.add_parser("score", help="score a viewer's answers against the key")
    score.add_argument("key", type=Path, help="OUT/key.json")
    score.add_argument("answers", type=Path, help="a text file, one line per pair: '3: B'")
    return p


def make(args) -> int:
    from age_cgan.aging import AgingModels
    from age_cgan.evaluation.photos import age_photos, photo_rows, use_prototype_strengths
    from age_cgan.evaluation.viewer import PAIRS_PER_SHEET, draw_pairs, sheet, write_key
    from age_cgan.evaluation.viewer import ViewerError
    from age_cgan.faces import FaceDetector, PhotoError, find_faces
    from age_cgan.visualize import save_png
    from age_cgan.pretrained import verified_run

    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise SystemExit(f"viewer_pairs.py: {args.out} exists and is not empty; choose another "
                         "--out or add --overwrite")
    if args.pairs < 1:
        raise SystemExit("viewer_pairs.py: --pairs must be at least 1")
    models = AgingModels.from_run(verified_run(args.model))
    if args.prototype_strengths:
        use_prototype_strengths(models, json.loads(args.prototype_strengths))
    bins = models.bins
    if args.target not in bins.labels:
        raise SystemExit(f"viewer_pairs.py: --target {args.target} is not one of this model's "
                         f"categories ({', '.join(bins.labels)})")
    target = bins.labels.index(args.target)
    method = args.method or models.default_method()[0]
    rows = photo_rows(args.photos, args.use)
    try:  # a few spare pairs, for photos in which no face is found
        pairs = draw_pairs(rows, bins, target, args.pairs + SPARE, args.seed)
    except ViewerError:
        pairs = draw_pairs(rows, bins, target, args.pairs, args.seed)
    aged = age_photos(models, [p[0] for p in pairs], method, args.strength)
    if aged.failures:
        print(f"viewer_pairs.py: no face found in {len(aged.failures)} photos to age, left out",
              file=sys.stderr)
    aged_by_path = {path: crops[target] for path, crops in zip(aged.paths, aged.aged)}
    detector = FaceDetector()
    rng = np.random.default_rng([args.seed, 31])
    faces, key = [], {"target": args.target, "method": method, "strength": args.strength,
                      "real_side": {}, "pairs": {}}
    for source, real in pairs:
        if len(faces) == args.pairs or str(source.path) not in aged_by_path:
            continue
        try:
            real_face = find_faces(real.path, models.image_size, detector,
                                   all_faces=False)[0].detail
        except PhotoError:
            continue
        number = len(faces) + 1
        side = "A" if rng.random() < 0.5 else "B"
        two = (real_face, aged_by_path[str(source.path)])
        faces.append(two if side == "A" else two[::-1])
        key["real_side"][number] = side
        key["pairs"][number] = {"real": real.path.name, "aged_from": source.path.name,
                                "aged_from_age": source.age}
    (args.out / "sheets").mkdir(parents=True, exist_ok=True)
    for first in range(0, len(faces), PAIRS_PER_SHEET):
        save_png(sheet(faces[first:first + PAIRS_PER_SHEET], first + 1),
                 args.out / "sheets" / f"sheet_{first // PAIRS_PER_SHEET + 1:02d}.png", "a sheet")
    write_key(args.out / "key.json", key)
    if len(faces) < args.pairs:
        print(f"viewer_pairs.py: only {len(faces)} of the {args.pairs} pairs asked for have a face "
              "found on both sides", file=sys.stderr)
    print(f"{len(faces)} pairs at {args.target} ({method}) on "
          f"{-(-len(faces) // PAIRS_PER_SHEET)} sheets in {args.out / 'sheets'}; key: "
          f"{args.out / 'key.json'} (keep it from the viewer)")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from age_cgan.errors import AgeCganError
    from age_cgan.evaluation.viewer import parse_answers, score

    try:
        if args.command == "make":
            return make(args)
        result = score(json.loads(args.key.read_text()), parse_answers(args.answers.read_text()))
    except (AgeCganError, OSError) as error:
        print(f"viewer_pairs.py: {error}", file=sys.stderr)
        return 2
    print(f"the real photo named in {result['named_real']} of {result['pairs']} pairs "
          f"({result['rate']:.0%}; 50% = the aged photos pass for real)"
          + (f"; no answer for pairs {result['missing']}" if result["missing"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
