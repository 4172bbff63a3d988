#!/usr/bin/env bash
# Lifter training on a CUDA device, inside one 10-minute call: four runs side by side, the
# same clock each, for the comparisons of issue 17:
#
#   mlp      the residual MLP from scratch              } architecture comparison at
#   tokens   the token transformer from scratch         } equal training time
#   mlp_ft   the shipped MLP, trained on                 } world-landmark ablation: the
#   mlp_wl   the shipped MLP, grown by world landmarks   } same start, the same budget
#
# Each writes a held-out probe curve into its history; the weights come back.
#
# PLAN=finetune instead runs one fine-tune of the shipped weights on the whole device, as
# the CPU stages train them (landmarks drawn by limbs, withheld from 75 % of the views, a
# moving average of the weights): run `ft`, the candidate to evaluate and ship.
#
#   python -c "from engines.training.train import write_compact; write_compact('data/mocap.npz', 'data/mocap_compact.npz')"
#   OUT=runs/device bash tools/device_train.sh      # MINUTES=7 DEVICE=cuda BATCH=4096 by default
#
# What comes back under $OUT (at most 8 files of 16 MiB on the lent machine): the logs and
# JSONs (run settings and history) of all runs in results.tar.gz, and the float16 weights,
# those over 16 MiB in two parts (join with `cat R.pt.part* > denoiser.pt`).
set -u
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-runs/device}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-4096}
DATA=${DATA:-data/mocap_compact.npz}
RUNS=/tmp/device_runs
SHIPPED=engines/diffusion/assets/denoiser.pt
mkdir -p "$OUT" "$RUNS"
command -v nvidia-smi >/dev/null && nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
common=(--data "$DATA" --device "$DEVICE" --batch "$BATCH" --minutes "$MINUTES" --probe-every "${PROBE_EVERY:-500}"
        --log-every "${LOG_EVERY:-100}" --save-every 100000 --threads 3 --no-onnx)
if [ "${PLAN:-compare}" = finetune ]; then
    RUN_NAMES="ft"
    python3 -m engines.training.train "${common[@]}" --out "$RUNS/ft" --seed 91 --lr "${LR:-2.5e-4}" --init "$SHIPPED" \
        --world-landmarks --world-absent 0.75 --world-noise limbs --ema "${EMA:-0.999}" >"$RUNS/ft.log" 2>&1 &
else
RUN_NAMES="mlp tokens mlp_ft mlp_wl"
python3 -m engines.training.train "${common[@]}" --out "$RUNS/mlp" --seed 21 --lr 5e-4 >"$RUNS/mlp.log" 2>&1 &
python3 -m engines.training.train "${common[@]}" --out "$RUNS/tokens" --seed 22 --lr 5e-4 --arch tokens \
    --width 64 --depth 3 --encoder-depth 1 >"$RUNS/tokens.log" 2>&1 &
python3 -m engines.training.train "${common[@]}" --out "$RUNS/mlp_ft" --seed 23 --lr 2.5e-4 --init "$SHIPPED" \
    >"$RUNS/mlp_ft.log" 2>&1 &
python3 -m engines.training.train "${common[@]}" --out "$RUNS/mlp_wl" --seed 23 --lr 2.5e-4 --init "$SHIPPED" \
    --world-landmarks >"$RUNS/mlp_wl.log" 2>&1 &
fi
wait
for run in $RUN_NAMES; do
    python3 - "$RUNS/$run" "$RUNS/$run.json" <<'PY'
import json, sys
run, out = sys.argv[1:]
try:
    info = json.load(open(f"{run}/denoiser.json"))
except FileNotFoundError:
    info = {"error": "no export"}
try:
    info["history"] = json.load(open(f"{run}/history.json"))
except FileNotFoundError:
    pass
json.dump(info, open(out, "w"), indent=1)
PY
    weights="$RUNS/$run/denoiser.pt"
    if [ -f "$weights" ]; then
        if [ "$(stat -c %s "$weights")" -gt 16000000 ]; then
            split -n 2 -d "$weights" "$OUT/$run.pt.part"
        else
            cp "$weights" "$OUT/$run.pt"
        fi
    fi
    tail -n 2 "$RUNS/$run.log"
done
tar -czf "$OUT/results.tar.gz" -C "$RUNS" $(cd "$RUNS" && ls *.log *.json)
ls -l "$OUT"
