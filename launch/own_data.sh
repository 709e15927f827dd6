#!/usr/bin/env bash
# Your own data, end to end: your text -> tokenizer -> token shards (+ unigram / bigram reference
# perplexities) -> pre-train a tiny model -> fine-tune it and a random-init twin on your labelled
# CSV/TSV/JSONL file(s) -> a table of pre-trained vs random scores.
#
#   bash launch/own_data.sh TEXT LABELS|- [OUT] [-- fine-tuning overrides...]
#
#   TEXT    a .txt file (one document or paragraph per line), a .jsonl file with a "text" field, or a
#           folder of .txt files
#   LABELS  a CSV/TSV (header row) or JSONL file of labelled examples (columns text, label; a fifth
#           of it, seeded and per class, is held out and reported), or a folder with
#           train.csv|tsv|jsonl and test.csv|tsv|jsonl; - : pre-training only
#   OUT     output folder (default runs/own)
#   after --: fine-tuning fields, e.g. --config.data.text_column=review --config.data.pair_column=b
#
#   OWN_TOKENS=2000 (tokenizer pieces)  OWN_POINT=paper-1.25m  OWN_STEPS=2000  OWN_SEQ_LEN=128
#   OWN_BATCH=64  OWN_TASK=table (or table_regression)  OWN_SEEDS=0,1,2 (fine-tuning seeds)
# Each step is one command of the tool; run them yourself to change anything the variables do not.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2
fi
TEXT=$1 LABELS=$2; shift 2
OUT=runs/own
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUT=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
for path in "$TEXT" "$LABELS"; do
  [ "$path" = "-" ] || [ -e "$path" ] || { echo "error: not found: $path" >&2; exit 2; }
done
source launch/venv.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 \
  | grep -v -e "^ *$" -e BuildBackendWarning -e "\*\*\*" -e "!!" -e "Please be careful" -e "name as your" -e "with strategy" || true
PY=.venv/bin/python
TOKENS=${OWN_TOKENS:-2000} SEQ_LEN=${OWN_SEQ_LEN:-128}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
if [ -d "$TEXT" ]; then SOURCE="textfiles:$TEXT"
elif [[ "$TEXT" == *.jsonl ]]; then SOURCE="jsonl:$TEXT"
else SOURCE="text:$TEXT"; fi
mkdir -p "$OUT"

echo "== 1/4 tokenizer ($TOKENS pieces) from $SOURCE"
$PY -m minilm_jax.corpus train-tokenizer --corpus "$SOURCE" --out "$OUT/tokenizer" --sizes "$TOKENS" \
  --overwrite --no_progress
MODEL=$(ls "$OUT"/tokenizer/*.model | head -1)
echo "== 2/4 token shards (sequences of $SEQ_LEN; 5% validation, 5% test)"
$PY -m minilm_jax.corpus shards --corpus "$SOURCE" --tokenizer "$MODEL" --out "$OUT/shards" \
  --seq_len "$SEQ_LEN" --mode packed --valid 0.05 --test 0.05 --overwrite --no_progress
echo "== 3/4 pre-training ${OWN_POINT:-paper-1.25m} for ${OWN_STEPS:-2000} steps"
$PY -m minilm_jax.pretrain --config=pretrain:"${OWN_POINT:-paper-1.25m}" --workdir="$OUT/pretrain" \
  --config.data.shards="$OUT/shards" --config.model.vocab_size=$((TOKENS + 10)) \
  --config.model.max_len="$SEQ_LEN" --config.train.num_steps="${OWN_STEPS:-2000}" \
  --config.train.batch_size="${OWN_BATCH:-64}" --config.eval.batch_size="${OWN_BATCH:-64}"
if [ "$LABELS" = "-" ]; then
  echo "== done: $OUT/pretrain (metrics.jsonl; TensorBoard: tensorboard --logdir $OUT/pretrain/tensorboard)"
  exit 0
fi
echo "== 4/4 fine-tuning ${OWN_TASK:-table} on $LABELS (pre-trained and random init)"
$PY -m minilm_jax.finetune --config=finetune:"${OWN_TASK:-table}" --workdir="$OUT/finetune" \
  --config.init.checkpoint="$OUT/pretrain" --config.init.mode=both --config.data.dir="$LABELS" \
  --config.train.seeds="${OWN_SEEDS:-0,1,2}" --config.data.max_len="$SEQ_LEN" "$@"
echo "== done: pre-trained model $OUT/pretrain; scores $OUT/finetune/results.md"
cat "$OUT/finetune/results.md"
