#!/usr/bin/env bash
# Stage 2 of the bundled default model: continue the stage-1 model (data/models/moses_v1.safetensors,
# made by scripts/train_default.sh) with 0.45 free nats per latent dimension instead of 0.6, the
# recipe README "Training" measured to lower the decoder's error rate:
#   bash scripts/train_default_v2.sh runs/moses_v2 100m            # first call, 100 minutes
#   bash scripts/train_default_v2.sh runs/moses_v2 5h --max-steps 6114   # continue to step 6,114
# (--max-time counts the run's whole training time, across calls.) Further arguments go to
# `molvae train`. Then: python scripts/finalize_default.py runs/moses_v2/last.safetensors
set -euo pipefail
out=${1:-runs/moses_v2}
time=${2:-100m}
shift $(( $# < 2 ? $# : 2 ))
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$out/resume.pt" ]; then  # continuing: the same as continuing stage 1
  exec bash "$root/scripts/train_default.sh" "$out" "$time" "$@"
fi
exec molvae train "$root/data/moses/train.csv.gz" --out "$out" --seed 0 \
  --init "$root/data/models/moses_v1.safetensors" --lr 1e-4 --lr-schedule constant --lr-final 0 \
  --kl-schedule constant --free-bits 0.45 --val-every 1000 --val-fcd true \
  --checkpoint-every 1000 --max-time "$time" "$@"
