# Sourced by launch/*.sh: check Python 3.11+ and create (or reuse) .venv in the repository root.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python 3.11+ is required (found $("$PY" --version 2>&1))" >&2; exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

# install_project [EXTRAS]: pip install -e ".[EXTRAS]" into .venv, pip's build chatter filtered; skipped
# when .venv already holds this checkout's install made from the same pyproject.toml and setup.py.
# A failed install is reported by pip and not recorded (the next call tries again).
install_project() {
  local spec="." status=0
  [ -n "${1:-}" ] && spec=".[$1]"
  if [ "$(cat "$(install_stamp "${1:-}")" 2>/dev/null)" = "$(install_sources)" ] && .venv/bin/python -I -c \
      'import sys, minilm_jax; sys.exit(not minilm_jax.__file__.startswith(sys.argv[1]))' "$PWD/" 2>/dev/null; then
    return 0
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 | { grep -v -e "^ *$" \
    -e BuildBackendWarning -e "\*\*\*" -e "!!" -e "Please be careful" -e "name as your" -e "with strategy" || true; } \
    || status=$?
  if [ "$status" = 0 ]; then record_install "${1:-}"; fi
  return 0
}

# record_install [EXTRAS...]: note that .venv holds this checkout's install with each of EXTRAS
# ("" for none), made from the current pyproject.toml and setup.py.
record_install() {
  local extras
  for extras in "$@"; do install_sources > "$(install_stamp "$extras")"; done
}
install_stamp() { echo ".venv/.minilm-jax-installed${1:+-$1}"; }
install_sources() { cat pyproject.toml setup.py 2>/dev/null | sha256sum; }
