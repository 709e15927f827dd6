#!/usr/bin/env bash
# minilm-jax on a local NVIDIA GPU.
#
#   bash launch/gpu.sh [--dry_run] COMMAND [args...]     (arguments after COMMAND go to the module)
#
# Commands:
#   setup            create .venv (launch/venv.sh), pip install -e . and JAX's CUDA build
#   check            nvidia-smi is there and JAX sees a GPU: prints each GPU's name and memory
#   pretrain ARGS    python -m minilm_jax.pretrain ARGS   (after check)
#   finetune ARGS    python -m minilm_jax.finetune ARGS   (after check)
#   sweep ARGS       python -m minilm_jax.sweep ARGS      (after check)
#   bench ARGS       python -m minilm_jax.bench ARGS      (after check)
#   aot ARGS         python -m minilm_jax.aot --target=attached ARGS: compile the pre-training step
#                    for this GPU and print its memory and FLOPs (after check)
#
# Environment (all overridable):
#   MINILM_CUDA=cuda12                   JAX CUDA build for setup: cuda12 or cuda13
#   XLA_PYTHON_CLIENT_MEM_FRACTION=0.90  share of GPU memory JAX preallocates (JAX's default: 0.75)
#   JAX_COMPILATION_CACHE_DIR=.cache/jax persistent compilation cache (set empty to disable)
#   MINILM_DRY_RUN=1                     same as --dry_run: print the commands instead of running them
#   NVIDIA_SMI=nvidia-smi                the nvidia-smi binary
#
# Examples:
#   bash launch/gpu.sh setup && bash launch/gpu.sh check
#   bash launch/gpu.sh pretrain --config=configs/pretrain.py:paper-1.25m --workdir=runs/p125 \
#       --config.data.shards=shards/constrained --config.model.dtype=bfloat16
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

source launch/common.sh

# Options come before COMMAND; everything after it goes to the module unchanged.
DRY_RUN=${MINILM_DRY_RUN:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry_run|--dry-run) DRY_RUN=1 ;;
    -*) die "unknown option '$1' (bash launch/gpu.sh -h lists them)" ;;
    *) break ;;
  esac
  shift
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
COMMAND=$1; shift

PY=.venv/bin/python
CUDA=${MINILM_CUDA:-cuda12}
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
GPU_ENV=("XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
         "JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR-$REPO/.cache/jax}")

setup() {
  case "$CUDA" in cuda12|cuda13) ;; *) die "MINILM_CUDA=$CUDA: expected cuda12 or cuda13" ;; esac
  if [ "$DRY_RUN" = 1 ]; then echo "source launch/venv.sh"; else source launch/venv.sh; fi
  # the package with its cuda12 / cuda13 extra: JAX's CUDA build within the package's jax range
  run "$PY" -m pip install --disable-pip-version-check -e ".[$CUDA]"
}

# Python run by `check`: JAX must see a GPU; prints each one's name and the memory JAX may use.
CHECK_PY='import sys, jax; gpus = [d for d in jax.devices() if d.platform == "gpu"]; gpus or sys.exit("error: JAX sees no GPU (devices: %s); install the CUDA build with: bash launch/gpu.sh setup (MINILM_CUDA=cuda12 or cuda13)" % jax.devices()); [print("jax %s: %s %s, %.1f GiB usable by JAX" % (jax.__version__, d, d.device_kind, (d.memory_stats() or {}).get("bytes_limit", 0) / 2**30)) for d in gpus]'

check() {
  if [ "$DRY_RUN" != 1 ] && ! command -v "$NVIDIA_SMI" >/dev/null 2>&1; then
    die "nvidia-smi not found: this machine has no NVIDIA driver (install it, or run without launch/gpu.sh on CPU)"
  fi
  if [ "$DRY_RUN" != 1 ] && [ ! -x "$PY" ]; then
    die "$PY not found: run  bash launch/gpu.sh setup  first"
  fi
  run "$NVIDIA_SMI" --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
  run env "${GPU_ENV[@]}" "$PY" -c "$CHECK_PY"
}

module() {
  local name=$1; shift
  check
  run env "${GPU_ENV[@]}" "$PY" -m "minilm_jax.$name" "$@"
}

case "$COMMAND" in
  help) usage ;;
  setup) setup ;;
  check) check ;;
  pretrain|finetune|sweep|bench) module "$COMMAND" "$@" ;;
  aot) module aot --target=attached "$@" ;;
  *) die "unknown command '$COMMAND' (bash launch/gpu.sh -h lists them)" ;;
esac
