#!/usr/bin/env bash
# Lifter training on a CUDA device, inside one 10-minute call: two fine-tuning runs of the
# shipped weights side by side, the same budget each, one drawing diffusion times where the
# samplers work (--timesteps sampler) and one uniformly (the original recipe). Each writes
# a held-out probe curve into its history; the weights of both come back.
#
#   python -c "from engines.training.train import write_compact; write_compact('data/mocap.npz', 'data/mocap_compact.npz')"
#   OUT=runs/device bash tools/device_train.sh            # MINUTES=7 DEVICE=cuda BATCH=4096 by default
#
# What comes back under $OUT (at most 8 files of 16 MiB on the lent machine): per recipe
# its log, a JSON with run settings and history, and the float16 weights in two parts
# (join with `cat R.pt.part* > denoiser.pt`).
set -u
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-runs/device}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-4096}
LR=${LR:-5e-4}
DATA=${DATA:-data/mocap_compact.npz}
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for recipe in sampler uniform; do
    python3 -m engines.training.train --data "$DATA" --out "/tmp/device_runs/$recipe" --device "$DEVICE" \
        --batch "$BATCH" --lr "$LR" --minutes "$MINUTES" --timesteps "$recipe" \
        --init engines/diffusion/assets/denoiser.pt --probe-every "${PROBE_EVERY:-500}" \
        --log-every "${LOG_EVERY:-100}" --save-every 100000 --threads 4 --seed 5 --no-onnx \
        >"$OUT/$recipe.log" 2>&1 &
done
wait
for recipe in sampler uniform; do
    run="/tmp/device_runs/$recipe"
    python3 - "$run" "$OUT/$recipe.json" <<'EOF'
import json, sys
run, out = sys.argv[1:]
info = json.load(open(f"{run}/denoiser.json"))
info["history"] = json.load(open(f"{run}/history.json"))
json.dump(info, open(out, "w"), indent=1)
EOF
    split -n 2 -d "$run/denoiser.pt" "$OUT/$recipe.pt.part"
    tail -n 3 "$OUT/$recipe.log"
done
ls -l "$OUT"
