#!/usr/bin/env bash
# Installs, builds, makes the demo models (a tiny Llama trained for a few seconds here, then
# fine-tuned fully and with LoRA) and shows what aquin says about each fine-tune.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${AQUIN_BUILD_DIR:-$root/build}
"$root/scripts/setup.sh" "$build"

demo=$build/demo
models=$demo/models
# Remake the models only when the maker or its text changed.
stamp=$(cat "$root/scripts/make_demo_models.py" "$root"/examples/demo/*.txt | sha256sum | cut -c1-16)
if [ "$(cat "$models/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "== making the demo models (training a tiny Llama on examples/demo/corpus.txt)"
  /usr/bin/python3 "$root/scripts/make_demo_models.py" --out "$models"
  echo "$stamp" > "$models/.stamp"
fi

aquin=$build/bin/aquin
export AQUIN_HOME=$demo/home
run() { echo; echo "\$ aquin $*"; "$aquin" "$@"; }

run --version
run session start --id demo --model "$models/base"
run weight-diff --checkpoint "$models/full-ft" --name full-ft-bf16
run weight-diff --checkpoint "$models/full-ft.pt" --name full-ft-pt --save
run weight-diff --checkpoint "$models/lora-adapter" --name lora --save
run residual-drift --checkpoint "$models/full-ft" --name full-ft --save
run residual-drift --checkpoint "$models/lora-adapter" --name lora --reduce mean --save
# Sparse features: the demo's own TopK SAE (trained by make_demo_models.py on the base's layer-2 residual
# stream, SAELens v6 layout), attached to the session, then the feature diff of each fine-tune.
run load sae "$models/sae"
run sae diff --checkpoint "$models/full-ft" --prompts "$root/examples/demo/probes.jsonl" --name full-ft --top 10 --save
run sae diff --checkpoint "$models/lora-adapter" --prompts "$root/examples/demo/probes.jsonl" --name lora --top 10 --save
run trajectory-analysis --dir "$models/checkpoints" --name full-ft-trajectory --save
# The merge gate exits 2 on a failed verdict; the demo shows the verdict either way.
# Behavioural probes: text from the base model's own domain, which a recipe fine-tune should leave alone.
run merge-analysis --checkpoint "$models/lora-adapter" --prompts "$root/examples/demo/probes.jsonl" --name lora-gate \
  --save || echo "(merge-analysis exit code $?)"
echo
echo "exports: $AQUIN_HOME/sessions/demo/exports/"
