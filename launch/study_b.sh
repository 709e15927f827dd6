#!/usr/bin/env bash
# Study B: does pre-training help tiny models, does the gap grow with the pre-training set and with
# token overlap, and does a soft committee of 1-layer members match a 6-layer model (and how fast)?
# CPU scale, offline, on the shared development data (33 minutes measured on 2 cores with the
# pre-training seeds of protocol v3; 14 minutes with one pre-training run per point, protocol v2):
#   WikiText-2 paragraphs -> uncased WordPiece vocabulary (tokenizers' trainer) -> nested subsets
#   (first 64 tokens of each paragraph) -> the `study_b` sweep of configs/sweep.py (pre-train 1-layer
#   models on each subset and a 6-layer model on the largest, each with pre-training seeds 0,1,2;
#   fine-tune on AG News, DBpedia-14, FewRel with both inits and 3 fine-tuning seeds) ->
#   python -m minilm_jax.report.study_b (gaps, size, overlap, committee vs K per run and over
#   pre-training seeds, latency from the trained checkpoints) -> $OUT/study/study_b/report.md
# The fixed protocol is the docstring of `study_b` in configs/sweep.py; nothing is dropped.
#
#   STUDY_B_OUT=runs/study_b  STUDY_B_SWEEP=study_b (study_b_smoke: the CI size)
#   MINILM_SHARED_DATA=../shared/data (ag_news/, dbpedia14/, fewrel/, wikitext2/)
#   STUDY_B_FULL=1: the paper's scale instead (a GPU): bert-base-uncased vocab.txt and English
#     Wikipedia from the Hugging Face hub, subsets of 20k/40k/90k articles, the `study_b_full` sweep
#   extra arguments go to `python -m minilm_jax.sweep`
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
install_project
PY=.venv/bin/python
OUT=${STUDY_B_OUT:-runs/study_b}
SHARED=${MINILM_SHARED_DATA:-../shared/data}
DATA="$OUT/data"
mkdir -p "$DATA"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.2}

if [ "${STUDY_B_FULL:-0}" = "1" ]; then
  SWEEP=${STUDY_B_SWEEP:-study_b_full}
  WIKI="hf:wikimedia/wikipedia#split=20231101.en,field=text"
  $PY -m minilm_jax.corpus fetch "$WIKI" hf-file:google-bert/bert-base-uncased/vocab.txt --out "$DATA/bert"
  TOKENIZER="$DATA/bert/vocab.txt"
  [ -d "$DATA/subsets" ] || $PY -m minilm_jax.corpus subsets --corpus "$WIKI" --tokenizer "$TOKENIZER" \
    --out "$DATA/subsets" --sizes 20000,40000,90000 --valid 2000 --seq_len 128 --no_progress
else
  SWEEP=${STUDY_B_SWEEP:-study_b}
  if [ "$SWEEP" = "study_b_smoke" ]; then VOCAB=1000; SIZES=100,300; VALID=50
  else VOCAB=4000; SIZES=750,1500,3000; VALID=300; fi
  WIKI_DIR="$SHARED/wikitext2/tokenized"
  [ -f "$WIKI_DIR/wiki.valid.tokens" ] || { echo "error: $WIKI_DIR/wiki.valid.tokens not found (set MINILM_SHARED_DATA)" >&2; exit 2; }
  # Paragraphs of at least 20 words are the "articles" (headings and stubs are not).
  cat "$WIKI_DIR/wiki.valid.tokens" "$WIKI_DIR/wiki.test.tokens" | awk 'NF >= 20' > "$DATA/paragraphs.txt"
  $PY -m minilm_jax.corpus train-tokenizer --corpus "text:$DATA/paragraphs.txt" --out "$DATA/tokenizer" \
    --model_types wordpiece --sizes "$VOCAB" --sample 100000 --overwrite --no_progress
  TOKENIZER="$DATA/tokenizer/wordpiece-$VOCAB.txt"
  $PY -m minilm_jax.corpus subsets --corpus "text:$DATA/paragraphs.txt" --tokenizer "$TOKENIZER" \
    --out "$DATA/subsets" --sizes "$SIZES" --valid "$VALID" --seq_len 64 --overwrite --no_progress
fi
$PY -m minilm_jax.sweep --config=configs/sweep.py:"$SWEEP" --root="$OUT/study" \
  --config.data_root="$DATA" --config.finetune_data_dir="$SHARED" "$@"
$PY -m minilm_jax.report.study_b --config=configs/sweep.py:"$SWEEP" --root="$OUT/study" \
  --config.data_root="$DATA" --config.finetune_data_dir="$SHARED"
echo "== report: $OUT/study/study_b/report.md"
