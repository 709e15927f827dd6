#!/usr/bin/env bash
# Prepare, on this machine, what a GPU machine of the device tool lacks for
# launch/device_check.sh (it has no git history and fetches nothing):
#   .device_baseline/   the baseline commit's files (git archive; default 2282720)
#   .whl/               wheels of the project's dependencies its image does not hold
#                       (ml-collections, tensorboardX), for Python 3.12
# Both folders are git-ignored; name them in the device call's `carry`, then run there:
#   PYTHON=python3 DEVICE_CHECK_BASELINE_TREE=.device_baseline bash launch/device_check.sh
#   bash launch/device_prepare.sh [BASELINE_COMMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-2282720}
rm -rf .device_baseline && mkdir -p .device_baseline
git archive "$BASE" | tar -x -C .device_baseline
echo "baseline $BASE -> .device_baseline ($(du -sh .device_baseline | cut -f1))"
mkdir -p .whl
for spec in "ml-collections>=1.0,<2" "tensorboardX>=2.6,<3"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform any -d .whl "$spec"
done
ls .whl
