#!/usr/bin/env bash
# A quick check of benchmarks/gpu_session.sh on the device before the real session: the same
# script, every benchmark launched the same way, at tiny step counts (wheels, imports, CUDA,
# the data paths in .gpudata/, each table written). About 1-2 minutes, most of it start-up
# (datasets, the sentencepiece vocabularies) and the untrained translation models' decoding.
#   bash benchmarks/gpu_check.sh          # results in $OUT (default /tmp/gpu_out), as the session
# Reading it: $OUT/summary.txt should hold every benchmark's table (numbers meaningless) and
# session.log an "(exit 0)" for every job; the per-job wall times give each one's start-up cost.
set -u
# each knob as below unless already set (DEVICE=cpu PREC=fp32 MT_PARALLEL=2 runs it on a CPU)
k() { export "$1=${!1-$2}"; }
k TOTAL 170; k SNAP_EVERY 30; k RESULTS /tmp/gc
k MT_STEPS 20; k MT_TUNE 10; k MT_EVALS 1
k HEADS_TRAIN 20; k HEADS_FT 2; k HEADS_IMP 1; k HEADS_REPEATS 1; k HEADS_ITERS 1
k HEADS_EXTRA "--fractions 0.0 0.5 --eval-batches 2"
k LOSO_STEPS 20; k LOSO_PARALLEL 2; k LOSO_EXTRA "--speakers theo jackson"
k MLM_PRE 20; k MLM_FT 20; k MLM_BEAM 1
k MAE_PRE 20; k MAE_FT 20; k MAE_PROBE 20; k MAE_SEEDS 0
exec bash "$(dirname "$0")/gpu_session.sh"
