#!/usr/bin/env bash
# One lent-GPU session, run from the repository root as `bash benchmarks/gpu_session.sh`:
# the GPU figures (benchmarks/gpu.py) alone first, then the cross-modal transfer matrix
# (benchmarks/transfer.py) with nanoGPT's GPU Shakespeare config training beside it.
# Needs: the data in .gpudata/ (fashion-mnist, fsdd, multi30k, tinyshakespeare) and, where the
# machine lacks them, wheels in .whl/ (soundfile, cffi, pycparser, jiwer, rapidfuzz, click).
# Everything it writes lands in $OUT (gpu.json, logs, results.tar.gz).
set -u
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
fi
export PYTHONPATH="${PYTHONPATH:-.}" PYTHONUNBUFFERED=1
DATA="$PWD/.gpudata"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    >> "$OUT/nvidia-smi.txt" 2>&1

echo "== $(date +%T) gpu.py"
timeout 170 python3 benchmarks/gpu.py --out "$OUT/gpu.json" --no-compile > "$OUT/gpu.log" 2>&1

echo "== $(date +%T) transfer matrix + GPT"
timeout 370 python3 benchmarks/transfer.py --out /tmp/tm --data "$DATA" --device cuda \
    --precision bf16 --jobs 10 --source-steps 800 --target-steps 200 --seeds 0 \
    --timing-steps 20 > /tmp/transfer.log 2>&1 &
transfer=$!
sleep 75  # the transfer benchmark times its steps first, alone on the GPU
timeout 290 python3 -m zoo train configs/lm/gpt_small_shakespeare.yaml --out /tmp/lm_small \
    "data.root=$DATA/tinyshakespeare/input.txt" train.device=cuda train.precision=bf16 \
    > /tmp/lm_small.log 2>&1
echo "== $(date +%T) GPT done (or stopped), waiting for the transfer matrix"
wait $transfer
python3 benchmarks/transfer.py --out /tmp/tm --report >> /tmp/transfer.log 2>&1
timeout 30 python3 -m zoo generate /tmp/lm_small "ROMEO:" --max-new-tokens 300 \
    --temperature 0.8 --top-k 50 --seed 1 --device cuda > /tmp/lm_sample.txt 2>&1
echo "== $(date +%T) packing"
tar -czf "$OUT/results.tar.gz" --exclude="*.safetensors" --exclude="*.pt" --exclude="*.model" \
    /tmp/tm /tmp/lm_small /tmp/transfer.log /tmp/lm_small.log /tmp/lm_sample.txt 2>/dev/null
ls -la "$OUT"
