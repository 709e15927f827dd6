#!/usr/bin/env bash
# Your own data, end to end: your text -> tokenizer -> token shards (+ unigram / bigram reference
# perplexities) -> pre-train a tiny model -> fine-tune it and a random-init twin on your labelled
# CSV/TSV/JSONL file(s) -> a table of pre-trained vs random scores.
#
#   bash launch/own_data.sh TEXT LABELS|- [OUT] [-- fine-tuning overrides...]
#
#   TEXT    a .txt file (one document or paragraph per line), a .jsonl file with a "text" field, or a
#           folder of .txt files
#   LABELS  a CSV/TSV (header row) or JSONL file of labelled examples (columns text, label; scored
#           by stratified k-fold cross-validation: every row once per seed, out of fold), or a
#           folder with train.csv|tsv|jsonl and test.csv|tsv|jsonl (test used as given);
#           - : pre-training only
#   OUT     output folder (default runs/own). Run again with another LABELS file and the same TEXT
#           and OUT: the tokenizer, shards and pre-trained model are reused, only the new task is
#           fine-tuned (into OUT/finetune/<LABELS name>)
#   after --: fine-tuning fields, e.g. --config.data.text_column=review --config.data.pair_column=b
#
#   OWN_TOKENS=2000 (tokenizer pieces)  OWN_POINT=paper-1.25m  OWN_STEPS=2500  OWN_SEQ_LEN=128
#   OWN_TASK=table (or table_regression)  OWN_SEEDS=0,1,2 (fine-tuning seeds)  OWN_FOLDS=10
#   (cross-validation folds of one LABELS file; 0: hold out a fifth instead)
#   OWN_RECIPE=own_data (the pre-training recipe: configs/own_data.py)  OWN_DRY_RUN=1: print the
#   commands, run nothing
# Each step is one command of the tool, printed before it runs (README "Your own data" shows them
# with the defaults); run them yourself to change anything the variables do not.
set -euo pipefail
CALLER=$PWD
cd "$(dirname "$0")/.."
REPO=$PWD
if [ $# -lt 2 ]; then
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2
fi
# Relative paths are the caller's (printed as given when the caller is in the checkout).
from_caller() {
  case "$1" in
    ""|-|/*) printf '%s' "$1" ;;
    *) if [ "$CALLER" = "$REPO" ]; then printf '%s' "$1"; else printf '%s/%s' "$CALLER" "$1"; fi ;;
  esac
}
TEXT=$(from_caller "$1") LABELS=$(from_caller "$2"); shift 2
OUT=runs/own
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUT=$(from_caller "$1"); shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
DRY=${OWN_DRY_RUN:-0}
TOKENS=${OWN_TOKENS:-2000} SEQ_LEN=${OWN_SEQ_LEN:-128} TASK=${OWN_TASK:-table} SEEDS=${OWN_SEEDS:-0,1,2}
FOLDS=${OWN_FOLDS:-10}
RECIPE=${OWN_RECIPE:-own_data}
[ -n "${OWN_POINT:-}" ] && RECIPE="$RECIPE:$OWN_POINT"
if [ -d "$TEXT" ]; then SOURCE="textfiles:$TEXT/*.txt"  # its .txt files, not a readme beside them
elif [[ "$TEXT" == *.jsonl ]]; then SOURCE="jsonl:$TEXT"
else SOURCE="text:$TEXT"; fi
NAME=$(basename "$LABELS"); NAME=${NAME%.*}
PRETRAIN_EXTRA=()
[ -n "${OWN_STEPS:-}" ] && PRETRAIN_EXTRA+=("--config.train.num_steps=$OWN_STEPS")
[ "$SEQ_LEN" != 128 ] && PRETRAIN_EXTRA+=("--config.model.max_len=$SEQ_LEN")
FINETUNE_EXTRA=()
[ "$FOLDS" != 10 ] && FINETUNE_EXTRA+=("--config.data.cv_folds=$FOLDS")
[ "$SEQ_LEN" != 128 ] && FINETUNE_EXTRA+=("--config.data.max_len=$SEQ_LEN")

PY=python
if [ "$DRY" = 0 ]; then
  for path in "$TEXT" "$LABELS"; do
    [ "$path" = "-" ] || [ -e "$path" ] || { echo "error: not found: $path" >&2; exit 2; }
  done
  if [ -d "$TEXT" ] && ! compgen -G "$TEXT/*.txt" > /dev/null; then
    echo "error: no .txt files in $TEXT (TEXT: a .txt file, a .jsonl file, or a folder of .txt" \
      "files)" >&2; exit 2
  fi
  source launch/venv.sh
  install_project
  PY=.venv/bin/python
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
  mkdir -p "$OUT" 2>/dev/null || { echo "error: cannot create the output folder $OUT" >&2; exit 2; }
fi

own_data_estimate() {  # a rough time estimate before the first step, from measured rates
  local text=$TEXT steps=${OWN_STEPS:-2500}  # what is made already is not counted
  [ -f "$OUT/shards/manifest.json" ] && text=-
  grep -q '"status": "completed"' "$OUT/pretrain/summary.json" 2>/dev/null && steps=0
  "$PY" -m minilm_jax.own_data_estimate "$text" "$LABELS" "$steps" "$SEEDS" "$FOLDS"
}

step() {  # print one command as README shows it (python -m ...), then run it with the venv's Python
  echo "\$ python $*"
  [ "$DRY" = 0 ] || return 0
  "$PY" "$@"
}

# The same TEXT and OUT again (e.g. another LABELS file): what was made from it is reused. The text
# is identified by its bytes (a file's sha256; a folder's .txt files, names and bytes), not by how
# its path is spelled: a relative path, a symlink or a copy of the same text is the same text.
text_digest() {  # text_digest KIND:PATH
  local path=${1#*:}
  path=${path%/\*.txt}  # a folder's .txt files
  if [ -d "$path" ]; then
    (cd "$path" && find . -maxdepth 1 -name '*.txt' -type f -print0 | sort -z \
      | xargs -0 -r sha256sum) | sha256sum | cut -c1-64
  elif [ -f "$path" ]; then sha256sum < "$path" | cut -c1-64
  else echo "missing"; fi
}
made_from() {  # made_from KIND:PATH -> what the stamp records
  echo "${1%%:*}:sha256=$(text_digest "$1") $TOKENS $SEQ_LEN $RECIPE ${OWN_STEPS:-}"
}
STAMP="$OUT/source.txt"
if [ "$DRY" = 0 ]; then
  MADE=$(made_from "$SOURCE")
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" != "$MADE" ]; then
    RECORDED=$(cat "$STAMP")
    # a stamp of the earlier format names the text by path: compare that text's bytes
    LEGACY=${RECORDED%% *}
    if [[ "$RECORDED" == *sha256=* ]] || [ "${RECORDED#* }" != "${MADE#* }" ] \
        || [ "$(cd "$REPO" && made_from "$LEGACY")" != "$MADE" ]; then
      echo "error: $OUT was made from another text or settings ('$RECORDED': source, pieces," \
        "length, recipe, steps), not '$MADE' ($SOURCE): use another OUT" >&2; exit 2
    fi
  fi
  echo "$MADE" > "$STAMP"
  own_data_estimate
fi
MODEL="$OUT/tokenizer/bpe-$TOKENS.model"
echo "== 1/4 tokenizer ($TOKENS pieces) from $SOURCE"
if [ "$DRY" = 0 ] && [ -f "$MODEL" ]; then echo "   $MODEL exists: reused"
else step -m minilm_jax.corpus train-tokenizer --corpus "$SOURCE" --out "$OUT/tokenizer" --sizes "$TOKENS"; fi
echo "== 2/4 token shards (sequences of $SEQ_LEN; 5% validation, 5% test) and their baselines"
if [ "$DRY" = 0 ] && [ -f "$OUT/shards/manifest.json" ]; then echo "   $OUT/shards exists: reused"
else step -m minilm_jax.corpus shards --corpus "$SOURCE" --tokenizer "$MODEL" --out "$OUT/shards" \
  --seq_len "$SEQ_LEN" --mode packed --valid 0.05 --test 0.05; fi
echo "== 3/4 pre-training ($RECIPE)"
if [ "$DRY" = 0 ] && grep -q '"status": "completed"' "$OUT/pretrain/summary.json" 2>/dev/null; then
  echo "   $OUT/pretrain finished: reused"
else step -m minilm_jax.pretrain --config="$RECIPE" --workdir="$OUT/pretrain" \
  --config.data.shards="$OUT/shards" --config.model.vocab_size=$((TOKENS + 10)) \
  ${PRETRAIN_EXTRA[@]+"${PRETRAIN_EXTRA[@]}"}; fi
if [ "$LABELS" = "-" ]; then
  echo "== done: $OUT/pretrain (metrics.jsonl; TensorBoard: tensorboard --logdir $OUT/pretrain/tensorboard)"
  exit 0
fi
echo "== 4/4 fine-tuning $TASK on $LABELS (pre-trained and random init)"
step -m minilm_jax.finetune --config=finetune:"$TASK" --workdir="$OUT/finetune/$NAME" \
  --config.init.checkpoint="$OUT/pretrain" --config.init.mode=both --config.data.dir="$LABELS" \
  --config.train.seeds="$SEEDS" ${FINETUNE_EXTRA[@]+"${FINETUNE_EXTRA[@]}"} "$@"
[ "$DRY" = 0 ] && echo "== done: pre-trained model $OUT/pretrain; scores $OUT/finetune/$NAME/results.md"
exit 0
