#!/usr/bin/env bash
# Rerun every console example of the README on the bundled model and redraw its pictures, so the
# README shows what the shipped model does. Prints each command and its output (stdout, then the
# log lines on stderr) in order; the pictures are written into molvae/pretrained/.
#   bash scripts/readme_examples.sh > examples.txt 2>&1
# One torch thread, as the README's examples state; run from anywhere.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pics="$root/molvae/pretrained"
cd "$work"
cp -r "$root/data" .
run() { echo "\$ $*"; "$@" 2>&1; echo; }
export OMP_NUM_THREADS=1
run molvae sample -n 5 --seed 0
run molvae fit-prior data/examples/drugs.smi -o drugs_prior.safetensors --kind gmm --components 8 --seed 0
run molvae sample --model drugs_prior.safetensors -n 5 --seed 0 --properties qed,mw
run molvae reconstruct data/examples/messy.smi --seed 0 -o rec.csv
run cat rec.csv
run molvae interpolate "CCOc1ccccc1C(N)=O" "O=C(NCCN1CCOCC1)c1ccc(Cl)cc1" --steps 7 --seed 0 \
    --image "$pics/example_strip.png"
run molvae neighbours "O=C(NCCN1CCOCC1)c1ccc(Cl)cc1" -n 8 --properties qed --seed 0
run molvae sample -n 12 --seed 0 --properties qed,sa --image "$pics/example_grid.png"
run molvae latent-map data/examples/drugs.csv --property QED --seed 0 -o "$pics/latent_map_drugs.png"
run molvae optimize qed --start "CC(=O)Nc1ccc(O)cc1" --similarity-to "CC(=O)Nc1ccc(O)cc1" \
    --min-similarity 0.4 --budget 500 --seed 0 --top 8 -o best.csv --image "$pics/optimize_example.png"
run cat best.csv
run molvae latent-map --property QED --method property --seed 0 -o "$pics/latent_map_qed.png"
# the model card's Domain rows (molvae.domain.assess on the bundled model, seed 0)
run python - <<'PY'
import molvae
from molvae.domain import assess

inputs = ["CCO", "c1ccccc1O", "c1ccncc1", "CCOc1ccccc1C(=O)N", "CCC(C)C(C)NC(=O)N1CCCC(NC(C)=O)C1"]
for a in assess(molvae.load(), inputs, seed=0):
    rec = "exact" if a.exact else f"`{a.reconstruction}`"
    print(f"| `{a.input}` | {a.heavy_atoms} | {a.neg_elbo_per_token:.2f} | {a.percentile:.1f} | "
          f"{rec} | {'yes' if a.in_domain else 'no'} |")
PY
