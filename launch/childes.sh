#!/usr/bin/env bash
# Study A's own setting at CPU scale (about 4 hours on 2 cores, estimated: 15 pre-training runs, 45
# Zorro-scored models; the sweep resumes exactly, so run the same command again after a stop): needs
# the AO-CHILDES transcripts, the AO-CHILDES vocabulary and GLUE in glue_data layout (default:
# ../shared/data, or $MINILM_SHARED_DATA:
#   aochildes/original_transcripts/*.csv, vocab/AOChildes_word_frequency.csv, glue/{SST-2,CoLA,STS-B}).
#   AO-CHILDES utterances filtered to the AO-CHILDES vocabulary -> SentencePiece tokenizer -> token
#   shards (+ unigram / bigram reference perplexities) -> pre-train the `childes` sweep of
#   configs/sweep.py (three sizes x pre-training seeds 1-5, the seeds of a size as one population;
#   the count is the power analysis in the sweep's docstring) -> fine-tune every run's 50% and 100%
#   snapshots and one random-init twin per size on vocabulary-filtered SST-2, CoLA and STS-B
#   (fine-tuning seeds 0,1,2); score Zorro's minimal pairs on both snapshots of every run and on a
#   random twin per run, initialised with that run's seed (from $SHARED/zorro when present, else
#   downloaded at its pinned commit) -> report (A1/A2 over pre-training seeds included).
#
#   CHILDES_OUT=runs/childes  CHILDES_TOKENS=2000
#   extra arguments go to `python -m minilm_jax.sweep`, e.g. --config.num_steps=500
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${MINILM_SHARED_DATA:-../shared/data}
for need in aochildes/original_transcripts vocab/AOChildes_word_frequency.csv glue/SST-2 glue/CoLA glue/STS-B; do
  if [ ! -e "$SHARED/$need" ]; then
    echo "error: $SHARED/$need not found (set MINILM_SHARED_DATA to the folder holding AO-CHILDES, its vocabulary and GLUE)" >&2
    exit 1
  fi
done
source launch/venv.sh
install_project
PY=.venv/bin/python
OUT=${CHILDES_OUT:-runs/childes}
TOKENS=${CHILDES_TOKENS:-2000}
SHARED=$(cd "$SHARED" && pwd)
mkdir -p "$OUT"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.2}
export MINILM_JAX_VOCAB="$SHARED/vocab/AOChildes_word_frequency.csv"  # corpus filter and task filter

if [ -z "${MINILM_PAIRS_MIRROR:-}" ] && [ -d "$SHARED/zorro/sentences" ]; then
  mkdir -p "$OUT/pairs_mirror/phueb"  # laid out like the repository; checked by sha256 as usual
  ln -sfn "$SHARED/zorro" "$OUT/pairs_mirror/phueb/Zorro"
  export MINILM_PAIRS_MIRROR="$OUT/pairs_mirror"
fi

SOURCE="aochildes:$SHARED/aochildes/original_transcripts"
echo "== text: $SOURCE   vocabulary: $MINILM_JAX_VOCAB"
# The text, tokenizer and shards are prepared once per $OUT and token count (a resumed study keeps
# the shards its runs started on); delete $OUT/prepared to prepare them again.
if [ "$(cat "$OUT/prepared" 2>/dev/null)" != "tokens=$TOKENS" ]; then
  rm -f "$OUT/prepared"
  $PY -m minilm_jax.corpus filter --source "$SOURCE" --unit sentence --out "$OUT/corpus" \
    --overwrite --no_progress
  $PY -m minilm_jax.corpus train-tokenizer --corpus "corpus:$OUT/corpus" --out "$OUT/tokenizer" \
    --sizes "$TOKENS" --sample 50000 --overwrite --no_progress
  MODEL=$(ls "$OUT"/tokenizer/*.model | head -1)
  $PY -m minilm_jax.corpus shards --corpus "corpus:$OUT/corpus" --tokenizer "$MODEL" \
    --out "$OUT/shards" --seq_len 128 --mode packed --valid 0.05 --test 0.05 --overwrite --no_progress
  echo "tokens=$TOKENS" > "$OUT/prepared"
else
  echo "== prepared earlier: $OUT/corpus, $OUT/tokenizer, $OUT/shards ($OUT/prepared)"
fi
$PY -m minilm_jax.sweep --config=configs/sweep.py:childes --root="$OUT/study" \
  --config.shards="$OUT/shards" --config.vocab_size=$((TOKENS + 10)) \
  --config.finetune_data_dir="$SHARED/glue" "$@"
echo "== report: $OUT/study/report/report.md   results: $OUT/study/results.jsonl"
