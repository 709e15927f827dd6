# Sourced by launch/*.sh: check Python 3.11+ and create (or reuse) .venv in the repository root.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python 3.11+ is required (found $("$PY" --version 2>&1))" >&2; exit 2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
