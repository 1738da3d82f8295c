#!/usr/bin/env bash
# One lent-GPU session, run from the repository root as `bash benchmarks/gpu_session.sh`.
# Every benchmark runs at once on the one GPU, each in its own process(es) under `timeout`,
# launched in priority order:
#   1. multitask (issue 25): three single-task runs against one multitask run, same core,
#      steps per task and seed; the sampling schedules on a vision + speech pair if they fit
#   2. head pruning (issue 26): vision, translation, speech, one process each
#   3. FSDD leave-one-speaker-out (issue 28): LOSO_EXTRA adds --variants and --init-from RUN
#   4. pre-training (issue 27): MLM -> translation (seeds 0, 1 in parallel after the shared
#      pre-training) and MAE -> Fashion-MNIST (one process per regime after the pre-training)
# Each benchmark rewrites its own table as it goes (heads: its log holds every row); every
# SNAP_EVERY seconds and at the end, all logs and result folders (weights excluded) are packed
# into $OUT/results.tar.gz and each table is copied into $OUT/summary.txt, so a session stopped
# from outside still returns what was measured.
# Needs: the data in .gpudata/ (fashion-mnist, multi30k; fsdd or .gpufsdd.tar.xz) and, where the
# machine lacks them, wheels in .whl/ (soundfile, cffi, pycparser, jiwer, rapidfuzz, click).
# Budgets are environment knobs (defaults sized for a ~500 s session on one H200), e.g.
#   MT_STEPS=2000 HEADS_FT=100 bash benchmarks/gpu_session.sh
# benchmarks/gpu_check.sh runs this script at tiny budgets (a ~1-2 minute check).
set -u
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
R="${RESULTS:-/tmp/gs}"; mkdir -p "$R/logs"          # every benchmark's --out and log
TOTAL="${TOTAL:-500}"            # s from the start to the last result packed
SNAP_EVERY="${SNAP_EVERY:-60}"   # s between snapshots into $OUT
DEVICE="${DEVICE:-cuda}"; PREC="${PREC:-bf16}"; AMP="${AMP---amp}"
MT_STEPS="${MT_STEPS:-1500}"     # steps per task; the multitask run does 3x, one process
MT_TUNE="${MT_TUNE:-400}"        # steps per task of each of 4 schedule runs (vision + speech)
MT_EVALS="${MT_EVALS:-4}"; MT_PARALLEL="${MT_PARALLEL:-8}"
HEADS_TRAIN="${HEADS_TRAIN:-1500}"; HEADS_FT="${HEADS_FT:-50}"   # 20 fine-tunes per task
HEADS_IMP="${HEADS_IMP:-8}"; HEADS_REPEATS="${HEADS_REPEATS:-10}"; HEADS_ITERS="${HEADS_ITERS:-3}"
HEADS_EXTRA="${HEADS_EXTRA:-}"   # e.g. "--eval-batches 2 --fractions 0.0 0.5" (the check)
LOSO_STEPS="${LOSO_STEPS:-1000}"; LOSO_PARALLEL="${LOSO_PARALLEL:-8}"; LOSO_EXTRA="${LOSO_EXTRA:-}"
LOSO_PREC="${LOSO_PREC:-fp32}"   # bf16 measured slower than fp32 for the speech models
MLM_PRE="${MLM_PRE:-2000}"; MLM_FT="${MLM_FT:-1000}"; MLM_BEAM="${MLM_BEAM:-4}"
MAE_PRE="${MAE_PRE:-1500}"; MAE_FT="${MAE_FT:-600}"; MAE_PROBE="${MAE_PROBE:-600}"
MAE_SEEDS="${MAE_SEEDS:-0 1}"
ONLY="${ONLY:-multitask heads loso mlm mae}"   # the benchmarks to run, e.g. ONLY="heads mae"

T0=$(date +%s); END=$((T0 + TOTAL))
want() { [[ " $ONLY " == *" $1 "* ]]; }
stamp() { echo "== $(date +%T) +$(($(date +%s) - T0))s $*" | tee -a "$R/logs/session.log"; }
left() {  # seconds to END less a margin ($1), at least 1 (`timeout 0` would never stop)
    local s=$((END - $(date +%s) - ${1:-0})); echo $((s > 1 ? s : 1))
}

# job NAME CMD...: CMD in the background under `timeout` (until END, less 15 s for packing),
# stdout and stderr in $R/logs/NAME.log, its start, end and exit status stamped
job() {
    local name=$1; shift
    ( stamp "start $name"; timeout -k 10 "$(left 15)" "$@" > "$R/logs/$name.log" 2>&1
      stamp "end $name (exit $?)" ) &
}
# after PATH DEP NAME CMD...: job NAME once PATH exists (checked every 5 s); given up when the
# job DEP ends first (then PATH will not come) or END is near
after() {
    local path=$1 dep=$2 name=$3; shift 3
    ( while [ ! -e "$path" ] && [ "$(left 60)" -gt 1 ] \
            && ! grep -q "end $dep " "$R/logs/session.log"; do sleep 5; done
      if [ -e "$path" ]; then sleep 2; job "$name" "$@"; wait
      else stamp "skip $name: no $path"; fi ) &
}
snapshot() {  # $OUT/results.tar.gz and $OUT/summary.txt from what is there now
    tar -czf "$R.tar.tmp" --exclude="*.safetensors" --exclude="*.pt" --exclude="*.pth" \
        --exclude="*.model" --exclude="*.bin" --exclude="*.lock" "$R" 2>/dev/null
    [ $? -le 1 ] && mv -f "$R.tar.tmp" "$OUT/results.tar.gz"  # 1: a file changed meanwhile
    { echo "# summary at +$(($(date +%s) - T0))s"; cat "$R/logs/session.log"
      for md in "$R"/multitask/multitask.md "$R"/heads_*/results.md "$R"/loso/loso.md \
                "$R"/mlm*/mlm_transfer.md "$R"/mae*/mae_finetune.md; do
          [ -f "$md" ] && { echo; echo "## $md"; cat "$md"; }
      done
      echo; echo "## heads rows so far"; grep -h "{'method'" "$R"/logs/heads_*.log 2>/dev/null
    } > "$R.summary.tmp"; mv -f "$R.summary.tmp" "$OUT/summary.txt"
}

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
fi
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
DATA="$PWD/.gpudata"
# FSDD may travel as .gpufsdd.tar.xz (10.5 MB instead of 21 MB of WAVs, under the 64 MiB carry)
if [ -f .gpufsdd.tar.xz ] && [ ! -d "$DATA/fsdd" ]; then
    mkdir -p "$DATA" && tar -xJf .gpufsdd.tar.xz -C "$DATA"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  python3 -c "import soundfile, jiwer, sacrebleu, sentencepiece, matplotlib; print('imports ok')"
} > "$OUT/nvidia-smi.txt" 2>&1
stamp "installed; $(tail -n 1 "$OUT/nvidia-smi.txt")"

# --- 1. multitask vs single-task (issue 25): 8 processes (3 singles, the multitask run,
# 4 schedules); --budget kills what is still running just before END
want multitask && job multitask python3 benchmarks/multitask.py --device "$DEVICE" --precision "$PREC" \
    --data "$DATA" --steps-per-task "$MT_STEPS" --tune-steps "$MT_TUNE" --evals "$MT_EVALS" \
    --parallel "$MT_PARALLEL" --budget "$(left 25)" --out "$R/multitask"

# --- 2. head pruning (issue 26): one process per task
for task in vision translation speech; do
    want heads || break
    # shellcheck disable=SC2086  # HEADS_EXTRA holds several arguments
    job "heads_$task" python3 benchmarks/heads.py --tasks "$task" --data "$DATA" \
        --device "$DEVICE" $AMP --train-steps "$HEADS_TRAIN" --finetune-steps "$HEADS_FT" \
        --importance-batches "$HEADS_IMP" --repeats "$HEADS_REPEATS" --iters "$HEADS_ITERS" \
        $HEADS_EXTRA --out "$R/heads_$task"
done

# --- 3. FSDD leave-one-speaker-out (issue 28): LOSO_EXTRA adds e.g. --variants and --init-from
if ! want loso; then :
elif [ -f benchmarks/fsdd_loso.py ]; then
    # shellcheck disable=SC2086
    job loso python3 benchmarks/fsdd_loso.py --device "$DEVICE" --precision "$LOSO_PREC" \
        --data "$DATA/fsdd" --parallel "$LOSO_PARALLEL" --steps "$LOSO_STEPS" \
        --budget "$(left 30)" $LOSO_EXTRA --out "$R/loso"
else
    stamp "skip loso: no benchmarks/fsdd_loso.py"
fi

# --- 4. pre-training (issue 27). MLM: seed 0 pre-trains; seed 1 (its own folder) starts on that
# pre-training once it is done (mt_random_s0/ appears right after it). MAE: finetune_100
# pre-trains; the other two regimes (own folders) start once its first fine-tune begins.
# Separate folders: no two processes write one init_*/ or one table.
mlm=(python3 benchmarks/mlm_transfer.py --data-root "$DATA" --device "$DEVICE" \
     --precision "$PREC" --pretrain-steps "$MLM_PRE" --finetune-steps "$MLM_FT" \
     --beam "$MLM_BEAM" --evals 2)
want mlm && job mlm_s0 "${mlm[@]}" --seeds 0 --out "$R/mlm"
want mlm && after "$R/mlm/mt_random_s0" mlm_s0 mlm_s1 "${mlm[@]}" --pretrained "$R/mlm/pretrain" \
    --seeds 1 \
    --out "$R/mlm_s1"
mae=(python3 benchmarks/mae_finetune.py --data-root "$DATA/fashion-mnist" --device "$DEVICE" \
     --precision "$PREC" --pretrain-steps "$MAE_PRE" --finetune-steps "$MAE_FT" \
     --probe-steps "$MAE_PROBE")
# shellcheck disable=SC2086  # MAE_SEEDS: one argument per seed
want mae && job mae_finetune_100 "${mae[@]}" --regimes finetune_100 --seeds $MAE_SEEDS --out "$R/mae"
for regime in finetune_10 probe_100; do
    want mae || break
    # shellcheck disable=SC2086
    after "$R/mae/finetune_100_mae_s0" mae_finetune_100 "mae_$regime" "${mae[@]}" \
        --pretrained "$R/mae/pretrain" --regimes "$regime" --seeds $MAE_SEEDS \
        --out "$R/mae_$regime"
done

( while sleep "$SNAP_EVERY"; do snapshot; done ) &
snapper=$!
stamp "all launched"
while [ -n "$(jobs -rp | grep -vx "$snapper")" ] && [ "$(left 15)" -gt 1 ]; do sleep 5; done
kill "$snapper" 2>/dev/null

stamp "packing"
snapshot
cp "$R/logs/session.log" "$OUT/session.log"
ls -la "$OUT"
