#!/usr/bin/env bash
# Every GPU performance target in one command, on this tree and on a baseline commit side by side
# (docs/performance.md, "Device check"): tokens/s and kernels per step of one paper-1.25m run,
# 16 members' tokens/s and bytes per member, base-large's MFU, the paper sweep's projected hours.
#   bash launch/device_check.sh [BASELINE_COMMIT]   (default: 2282720, the tree before the
#                                                    encoder's kernels)
#   DEVICE_CHECK_QUICK=1 bash launch/device_check.sh HEAD   (tiny sizes on a CPU, same code path)
# Environment: DEVICE_CHECK_BUDGET_S (seconds for everything, default 480), OUT (where the table,
# JSON and log go; default runs/device_check), PYTHON (default .venv/bin/python, else python3),
# DEVICE_CHECK_NOW_ARGS (bench options for this tree's runs only), DEVICE_CHECK_BASELINE_TREE (a
# folder holding the baseline's files, where this copy has no .git). Wheels in .whl/ (written by
# launch/device_prepare.sh for a machine that lacks some dependencies) are installed into a
# temporary folder put on PYTHONPATH first.
# Exit status: 0 every figure measured on both sides, 1 some figure not, 2 a prerequisite failed
# or the budget is too small to measure anything (one error: line, before anything is measured;
# OUT untouched).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
command -v "$py" >/dev/null 2>&1 || { echo "error: no Python interpreter: set PYTHON" >&2; exit 2; }
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  site=$(mktemp -d)
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl \
    || { echo "error: cannot install the wheels in .whl/ (launch/device_prepare.sh)" >&2; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$py" -m minilm_jax.device_check "$@"
