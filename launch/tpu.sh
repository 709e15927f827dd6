#!/usr/bin/env bash
# minilm-jax on Cloud TPU VMs: one host (v5litepod-8, v4-8, ...) or a pod slice (v4-32, v5litepod-16, ...).
#
#   bash launch/tpu.sh [options] COMMAND [args...]     (arguments after COMMAND go to the command)
#
# Commands:
#   create             create the TPU VM (gcloud compute tpus tpu-vm create)
#   setup              on every worker: this checkout (copied with scp) or --repo (git clone), a
#                      Python 3.11+ .venv, pip install -e ".[gcs]" "jax[tpu]"
#   shards SRC [DEST]  token shards onto every worker's disk (pre-training memory-maps them): SRC a
#                      local folder (scp) or gs://... (gcloud storage rsync); DEST default data/<name>
#   check              on every worker: JAX's process index and count, local and global devices
#   pretrain ARGS      on every worker: python -m minilm_jax.pretrain ARGS --config.distributed.initialize=True
#   finetune ARGS      on every worker: python -m minilm_jax.finetune ARGS --config.distributed.initialize=True
#   sweep ARGS         on every worker: python -m minilm_jax.sweep ARGS (a pod slice: every host is
#                      one sweep worker, --launcher=tpu, sharing --root=/shared/mount/DIR)
#   run CMD            on every worker, in the checkout: CMD
#   delete             delete the TPU VM
#
# Options (or the environment variable next to each):
#   --name=NAME              TPU_NAME              TPU VM name (required)
#   --zone=ZONE              TPU_ZONE              e.g. us-central2-b (required)
#   --accelerator_type=TYPE  TPU_ACCELERATOR_TYPE  default v5litepod-8; e.g. v4-8, v4-32, v5p-16, v6e-8
#   --version=VERSION        TPU_RUNTIME_VERSION   default by generation: v2-alpha-tpuv5-lite (v5e),
#                                                  v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e),
#                                                  tpu-ubuntu2204-base (v4 and older)
#   --project=PROJECT        TPU_PROJECT           default: gcloud's configured project
#   --repo=URL               TPU_REPO              git URL cloned on the workers (default: copy this checkout)
#   --ref=REF                TPU_REPO_REF          branch, tag or commit of --repo
#   --dir=DIR                TPU_REMOTE_DIR        checkout on the workers, under $HOME (default minilm-jax)
#   --python=PY              TPU_PYTHON            Python 3.11+ on the workers (default python3.11,
#                                                  apt-installed when missing)
#   --spot                   TPU_SPOT=1            create a Spot TPU VM
#   --detach                 TPU_DETACH=1          pretrain/finetune/sweep under nohup, output in DIR/logs/
#   --dry_run                MINILM_DRY_RUN=1      print every command, one per line, run nothing
#   GCLOUD=PATH                                    the gcloud binary (default: gcloud)
#
# A pod slice (more than 8 TensorCores/chips: v4-16+, v5p-16+, v5litepod-16+, v6e-16+) runs one
# process per worker host: its --workdir must be gs://..., storage every host sees, because Orbax
# writes each checkpoint from all hosts. A sweep there runs one worker per host (each trains on its
# own chips) with --root on a filesystem every host mounts.
#
# Example, a v4-32 pod slice:
#   export TPU_NAME=mlm TPU_ZONE=us-central2-b TPU_ACCELERATOR_TYPE=v4-32
#   bash launch/tpu.sh create && bash launch/tpu.sh setup
#   bash launch/tpu.sh shards gs://BUCKET/shards/constrained
#   bash launch/tpu.sh pretrain --config=configs/pretrain.py:E768-H768-I3072-L12-A12-V19010 \
#       --workdir=gs://BUCKET/runs/e768 --config.data.shards=data/constrained
#   bash launch/tpu.sh delete
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

source launch/common.sh

NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
TYPE=${TPU_ACCELERATOR_TYPE:-v5litepod-8}
VERSION=${TPU_RUNTIME_VERSION:-}
PROJECT=${TPU_PROJECT:-}
GIT_URL=${TPU_REPO:-}
GIT_REF=${TPU_REPO_REF:-}
DIR=${TPU_REMOTE_DIR:-minilm-jax}
REMOTE_PY=${TPU_PYTHON:-python3.11}
SPOT=${TPU_SPOT:-0}
DETACH=${TPU_DETACH:-0}
DRY_RUN=${MINILM_DRY_RUN:-0}
GCLOUD=${GCLOUD:-gcloud}

# Options come before COMMAND; everything after it goes to the command unchanged.
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name=*) NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --accelerator_type=*|--accelerator-type=*) TYPE=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --repo=*) GIT_URL=${1#*=} ;;
    --ref=*) GIT_REF=${1#*=} ;;
    --dir=*) DIR=${1#*=} ;;
    --python=*) REMOTE_PY=${1#*=} ;;
    --spot) SPOT=1 ;;
    --detach) DETACH=1 ;;
    --dry_run|--dry-run) DRY_RUN=1 ;;
    -*) die "unknown option '$1' (bash launch/tpu.sh -h lists them)" ;;
    *) break ;;
  esac
  shift
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
COMMAND=$1; shift
ARGS=("$@")

case "$COMMAND" in
  create|setup|shards|check|pretrain|finetune|sweep|run|delete) ;;
  help) usage; exit 0 ;;
  *) die "unknown command '$COMMAND' (bash launch/tpu.sh -h lists them)" ;;
esac

# ---- configuration checks ---------------------------------------------------------------------
[ -n "$NAME" ] || die "no TPU name: pass --name=NAME or set TPU_NAME"
[ -n "$ZONE" ] || die "no zone: pass --zone=ZONE or set TPU_ZONE (e.g. us-central2-b for v4, us-west4-a for v5e)"
[[ $TYPE =~ ^[a-z0-9]+-[0-9]+$ ]] || die "accelerator type '$TYPE' is not of the form GENERATION-SIZE (e.g. v5litepod-8, v4-32)"
[[ $DIR =~ ^[A-Za-z0-9_.][A-Za-z0-9_./-]*$ ]] || die "--dir=$DIR: use a plain path under \$HOME (letters, digits, . _ - /)"
CORES=${TYPE##*-}
MULTI_HOST=0
[ "$CORES" -gt 8 ] && MULTI_HOST=1

default_version() {
  case "$TYPE" in
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime version for '$TYPE': pass --version=VERSION" ;;
  esac
}
[ -n "$VERSION" ] || VERSION=$(default_version)

# The value of --FLAG=VALUE or --FLAG VALUE among the pass-through arguments.
arg_value() {
  local flag=$1 i
  for ((i = 0; i < ${#ARGS[@]}; i++)); do
    case "${ARGS[$i]}" in
      "$flag="*) echo "${ARGS[$i]#*=}"; return ;;
      "$flag") echo "${ARGS[$((i + 1))]:-}"; return ;;
    esac
  done
}

has_arg() {
  local arg
  for arg in ${ARGS[@]+"${ARGS[@]}"}; do [ "$arg" != "$1" ] || return 0; done
  return 1
}

# A pod slice needs its output folder on shared storage (gs://).
check_output_dir() {
  local flag=$1 dir
  dir=$(arg_value "$flag")
  if [ -z "$dir" ]; then
    if [ "$COMMAND" = sweep ] && has_arg --dry_run; then return; fi  # the sweep's plan needs no root
    die "$COMMAND needs $flag=DIR (gs://BUCKET/... on a pod slice)"
  fi
  if [[ $dir != gs://* ]]; then
    if [ "$MULTI_HOST" = 1 ]; then
      die "$flag=$dir is not on shared storage: $TYPE is a multi-host pod slice and every host writes its part of each Orbax checkpoint; use $flag=gs://BUCKET/..."
    fi
    note "$flag=$dir lives on the TPU VM's disk and is lost when the VM is deleted; gs://BUCKET/... keeps it"
  fi
}


if [ "$DRY_RUN" != 1 ] && ! command -v "$GCLOUD" >/dev/null 2>&1; then
  die "gcloud not found ($GCLOUD): install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run gcloud auth login"
fi

# ---- gcloud commands --------------------------------------------------------------------------
TPU_VM=("$GCLOUD" compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[ -z "$PROJECT" ] || WHERE+=(--project="$PROJECT")

on_all_workers() { run "${TPU_VM[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command="$1"; }

# Remote: Python 3.11+, .venv, minilm-jax and JAX for TPU (libtpu comes from PyPI with jax[tpu]).
install_cmd() {
  local py=$REMOTE_PY apt=""
  if [[ $py =~ ^python3\.[0-9]+$ ]]; then
    apt="(command -v $py >/dev/null || (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $py $py-venv)) && "
  fi
  echo "${apt}PYTHON=$py . launch/venv.sh && .venv/bin/python -m pip install -q -U pip && $(quote .venv/bin/python -m pip install -q -e ".[gcs,tpu]")"
}

setup() {
  if [ -n "$GIT_URL" ]; then
    local fetch="git -C $DIR pull -q --ff-only"
    [ -z "$GIT_REF" ] || fetch="git -C $DIR fetch -q origin && git -C $DIR checkout -q $(quote "$GIT_REF")"
    on_all_workers "(test -d $DIR/.git || git clone -q $(quote "$GIT_URL") $DIR) && $fetch && cd $DIR && $(install_cmd)"
    return
  fi
  local tarball=${TMPDIR:-/tmp}/minilm-jax-$NAME.tar.gz
  run tar -czf "$tarball" --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./workdirs \
    --exclude=./.cache --exclude=./build --exclude=./dist --exclude=./.pytest_cache \
    --exclude=__pycache__ --exclude='*.egg-info' -C "$REPO" .
  run "${TPU_VM[@]}" scp "$tarball" "$NAME:minilm-jax-src.tar.gz" "${WHERE[@]}" --worker=all
  on_all_workers "mkdir -p $DIR && tar -xzf minilm-jax-src.tar.gz -C $DIR && rm minilm-jax-src.tar.gz && cd $DIR && $(install_cmd)"
  [ "$DRY_RUN" = 1 ] || rm -f "$tarball"
}

shards() {
  [ ${#ARGS[@]} -ge 1 ] || die "shards needs SRC: a local shard folder or gs://BUCKET/..."
  local src=${ARGS[0]%/} dest=${ARGS[1]:-}
  dest=${dest:-data/$(basename "$src")}
  [[ $dest =~ ^[A-Za-z0-9_.][A-Za-z0-9_./-]*$ ]] || die "DEST=$dest: use a plain path inside the checkout"
  if [[ $src == gs://* ]]; then
    on_all_workers "mkdir -p $DIR/$dest && gcloud storage rsync --recursive $(quote "$src") $DIR/$dest"
  else
    [ "$DRY_RUN" = 1 ] || [ -f "$src/manifest.json" ] || die "$src is not a token-shard folder (no manifest.json)"
    on_all_workers "rm -rf $DIR/$dest && mkdir -p $(dirname "$DIR/$dest")"
    run "${TPU_VM[@]}" scp --recurse "$src" "$NAME:$DIR/$dest" "${WHERE[@]}" --worker=all
  fi
  note "pass --config.data.shards=$dest to pretrain"
}

# Remote command running `python -m minilm_jax.MODULE ARGS` in the checkout.
module_cmd() {
  local module=$1; shift
  local cmd
  cmd="$(quote .venv/bin/python -m "minilm_jax.$module" "$@")"
  if [ "$DETACH" = 1 ]; then
    local log
    log="logs/$module-$(date +%Y%m%d-%H%M%S).log"
    note "output on each worker in $DIR/$log"
    cmd="mkdir -p logs && nohup $cmd > $log 2>&1 < /dev/null &"
  fi
  echo "cd $DIR && $cmd"
}

CHECK_PY='import jax; jax.distributed.initialize(); print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local of {jax.device_count()} devices, {jax.devices()[0].device_kind}")'

case "$COMMAND" in
  create)
    create=("${TPU_VM[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type="$TYPE" --version="$VERSION")
    [ "$SPOT" != 1 ] || create+=(--spot)
    run "${create[@]}" ;;
  setup) setup ;;
  shards) shards ;;
  check) on_all_workers "cd $DIR && $(quote .venv/bin/python -c "$CHECK_PY")" ;;
  pretrain|finetune)
    check_output_dir --workdir
    init=(--config.distributed.initialize=True)
    [ -z "$(arg_value --config.distributed.initialize)" ] || init=()
    on_all_workers "$(module_cmd "$COMMAND" ${ARGS[@]+"${ARGS[@]}"} ${init[@]+"${init[@]}"})" ;;
  sweep)
    if [ "$MULTI_HOST" = 1 ] && ! has_arg --dry_run; then
      # Every host is one sweep worker (its own chips); the workers share the root: a gs:// bucket
      # (claims by generation preconditions) or a filesystem every host mounts (Filestore/NFS).
      root=$(arg_value --root)
      [ -n "$root" ] || die "sweep needs --root=DIR"
      [[ $root == /* || $root == gs://* ]] || die "--root=$root: on the pod slice $TYPE every host runs a sweep worker, and the workers share the root; use a gs:// location or an absolute path on a filesystem every host mounts (e.g. a Filestore share at /mnt/shared), not the VM's own disk"
      on_all_workers "$(module_cmd sweep ${ARGS[@]+"${ARGS[@]}"} --launcher=tpu)"
    else
      check_output_dir --root
      on_all_workers "$(module_cmd sweep ${ARGS[@]+"${ARGS[@]}"})"
    fi ;;
  run)
    [ ${#ARGS[@]} -ge 1 ] || die "run needs a command"
    on_all_workers "cd $DIR && ${ARGS[*]}" ;;
  delete) run "${TPU_VM[@]}" delete "$NAME" "${WHERE[@]}" --quiet ;;
esac
