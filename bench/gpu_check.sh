#!/usr/bin/env bash
# Device check for the measurement backend, in under five minutes.
#
#   bench/gpu_check.sh                      # CUDA: torch, bf16, Llama-3-8B head shapes
#   bench/gpu_check.sh --device cpu         # the same logic with numpy at small shapes
#   bench/gpu_check.sh --device cpu --quick # tiny shapes (seconds)
#   bench/gpu_check.sh --json out/gpu_check.json --db out/gpu_check.sqlite
#
# Prints achieved bandwidth vs the device's peak, the measured and modelled crossover K*, the
# calibrated model's error per plan, and the router's per-step overhead. Installs nothing and
# needs no network: it runs from this checkout with the Python found here (PYTHON=... to pick
# one), which must have numpy, and torch for --device cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
device=cuda
prev=""
for arg in "$@"; do
  if [ "$prev" = "--device" ]; then device="$arg"; fi
  case "$arg" in --device=*) device="${arg#--device=}" ;; esac
  prev="$arg"
done
"$PY" -c 'import numpy' 2>/dev/null || { echo "gpu_check: $PY has no numpy" >&2; exit 2; }
if [ "$device" = "cuda" ]; then
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null || {
    echo "gpu_check: $PY needs torch with a CUDA device for --device cuda (try --device cpu)" >&2
    exit 2
  }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 290 "$PY" -m app.measure.check "$@"
