# Sourced by launch/gpu.sh and launch/tpu.sh: messages, shell quoting and --dry_run printing.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }
note() { echo "note: $*" >&2; }

# Print a command the way a shell would read it back (words quoted only where needed).
quote() {
  local out=() word safe='^[A-Za-z0-9_./:=@%+,-]+$'
  for word in "$@"; do
    if [[ $word =~ $safe ]]; then out+=("$word"); else out+=("'${word//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
# Run a command, or print it (one line) under --dry_run.
run() { if [ "$DRY_RUN" = 1 ]; then quote "$@"; else "$@"; fi; }
