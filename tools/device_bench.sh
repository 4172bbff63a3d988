#!/usr/bin/env bash
# Issue 18's GPU item, inside one call of under 10 minutes: the networks of the live path on
# CUDA (ONNX Runtime, eager torch and torch.compile) for 1, 4 and 16 people, against ONNX
# Runtime on the CPU, each model at each batch (tools/bench_engines.py; the lift's fused K-step
# sampler at K = 2, live mode's). Results: $OUT/engines_cuda.json and the log.
#
#   OUT=runs/device_bench bash tools/device_bench.sh          # DEVICE=cuda by default
#
# What it does not run, and why: the whole live pipeline (`smplstream bench`) needs PyAV and
# pyzmq, which the lent machines lack, and PyAV's wheel (~35 MB) does not fit beside this
# repository (60 MB) in the 64 MiB the device's working tree may take; and the keypoint fit
# runs on the CPU whichever engine (its linear algebra is many small operations, written for
# the CPU), so "refinement on the same device" needs that port first. Checked here with
# DEVICE=cpu (the same script, the CUDA backends left out).
set -u
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-runs/device_bench}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
backends=(onnxruntime torch)
[ "$DEVICE" = cuda ] && backends+=(torch-compile)
timeout "${LIMIT_S:-480}" python3 tools/bench_engines.py --device "$DEVICE" --backends "${backends[@]}" \
    --batches 1 4 16 --steps 2 --repeat "${REPEAT:-20}" --budget "${BUDGET:-3}" --json \
    >"$OUT/engines_$DEVICE.json" 2>"$OUT/engines_$DEVICE.log"
echo "bench_engines exit $?"
tail -n 5 "$OUT/engines_$DEVICE.log"
