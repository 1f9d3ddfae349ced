#!/usr/bin/env bash
# Train (or continue) the bundled default model on MOSES train on this machine's CPU or GPU.
#   bash scripts/train_default.sh runs/moses_default 100m     # first run, 100 minutes
#   bash scripts/train_default.sh runs/moses_default 60m      # continue it for 60 more
# Further arguments go to `molvae train`. The bundled model's run was continued like this, which
# gives the same learning-rate schedule as the recipe below from its start:
#   bash scripts/train_default.sh runs/moses_default 100m --lr-schedule cosine \
#       --lr-decay-start 12500 --lr-decay-steps 7500 --lr-final 5e-5
# and then warm-restarted from step 19,253 at a lower peak rate that anneals again (the recipe
# file cannot express a second cycle; config.json records it under lr_schedule_changes):
#   bash scripts/train_default.sh runs/moses_default 118m --lr 3e-4 --lr-schedule cosine \
#       --lr-decay-start 19253 --lr-decay-steps 7000 --lr-final 5e-5
# stopped at step 19,975 and resumed with a shorter anneal that fit the time left:
#   bash scripts/train_default.sh runs/moses_default 66m --lr-decay-steps 5800
# Then: python scripts/finalize_default.py runs/moses_default
set -euo pipefail
out=${1:-runs/moses_default}
time=${2:-100m}
shift $(( $# < 2 ? $# : 2 ))
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$out/resume.pt" ]; then
  exec molvae train "$root/data/moses/train.csv.gz" --out "$out" --resume --max-time "$time" "$@"
fi
exec molvae train "$root/data/moses/train.csv.gz" --out "$out" \
  --config moses --seed 0 --max-time "$time" "$@"
