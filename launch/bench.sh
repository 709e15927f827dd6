#!/usr/bin/env bash
# Speed figures on this machine's first device (GPU, TPU or CPU), one JSON file per benchmark:
# pre-training tokens/s and MFU (float32 and bfloat16, attention implementations, Hugging Face
# RobertaForMaskedLM side by side when torch + transformers are installed), several fine-tuning
# seeds in one program, and committee latency.
#   bash launch/bench.sh [OUTDIR]          (default runs/bench; PYTHON=... picks the interpreter)
#   BENCH_QUICK=1 bash launch/bench.sh     (the 1.25M point only: a smoke test of the script)
#   BENCH_ONLY='large|seeds' bash launch/bench.sh   (only the benchmarks whose names match)
# A benchmark that fails or runs past BENCH_TIMEOUT seconds (default 300) prints a warning and the
# rest still run; the exit status is the number of failed benchmarks.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench}
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
mkdir -p "$out"
failed=0
hf=$("$py" -c 'import torch, transformers' 2>/dev/null && echo --hf || true)

bench() {  # bench NAME MODULE ARGS...: one benchmark, figures to OUTDIR/NAME.json, log to NAME.log
  local name=$1 module=$2; shift 2
  [[ "$name" =~ ${BENCH_ONLY:-.} ]] || return 0
  echo "== $name: python -m $module $*"
  if timeout "${BENCH_TIMEOUT:-300}" "$py" -m "$module" "$@" --json "$out/$name.json" \
      > >(tee "$out/$name.log") 2>&1; then :; else
    echo "warning: $name failed (exit $?); see $out/$name.log" >&2
    failed=$((failed + 1))
  fi
}

"$py" -c 'import jax; print("jax", jax.__version__, jax.devices())' | tee "$out/device.txt"
# The paper's 1.25M model at the paper's batch: tiny steps, so also with 10 steps per dispatch.
bench pretrain-1.25m-f32 minilm_jax.bench --point paper-1.25m --batch 256 --steps 50 $hf
bench pretrain-1.25m-bf16 minilm_jax.bench --point paper-1.25m --batch 256 --steps 50 --dtype bfloat16 $hf
bench pretrain-1.25m-bf16-k10 minilm_jax.bench --point paper-1.25m --batch 256 --steps 100 \
  --dtype bfloat16 --steps_per_dispatch 10
[ "${BENCH_QUICK:-0}" = 1 ] && exit "$failed"
# The largest one-factor-at-a-time base (E256-L8, ~19M parameters).
bench pretrain-large-f32 minilm_jax.bench --point base-large --batch 256 --steps 20 $hf
bench pretrain-large-bf16 minilm_jax.bench --point base-large --batch 256 --steps 20 --dtype bfloat16 $hf
bench pretrain-large-bf16-xla minilm_jax.bench --point base-large --batch 256 --steps 20 \
  --dtype bfloat16 --attention xla
bench pretrain-large-bf16-cudnn minilm_jax.bench --point base-large --batch 256 --steps 20 \
  --dtype bfloat16 --attention cudnn
# Fine-tuning seeds in one vmapped program vs one after another; committee vs deep model latency.
bench finetune-seeds minilm_jax.finetune.bench --members 1,4,8,16 --steps 250 --repeats 20
bench latency minilm_jax.latency --batch_sizes 1,32,256 --repeats 50
bench latency-bf16 minilm_jax.latency --batch_sizes 1,32,256 --repeats 50 --dtype bfloat16
# The paper's 71-run sweep projected from its first points (one epoch of 1.16e9 tokens per run).
bench sweep-paper-bf16 minilm_jax.bench --sweep configs/sweep.py:paper --batch 256 --steps 20 \
  --dtype bfloat16 --sweep_limit "${BENCH_SWEEP_LIMIT:-12}"
exit "$failed"
