#!/usr/bin/env bash
# Set up (or reuse) .venv, install minilm-jax with its test extras, run the test suite.
#   MINILM_TEST_INTEROP=0   skip installing torch/transformers (the HF interop tests then skip)
#   MINILM_SHARED_DATA=DIR  where the development datasets live (default: ../shared/data)
#   MINILM_TEST_GPU_COMPILE=0  skip installing the CUDA plugin wheels (the deviceless GPU compile tests skip)
#   MINILM_TEST_WORKERS=N   pytest-xdist workers (default: one a core and one more, one per 2 GiB at most)
#   extra arguments go to pytest, e.g.  bash launch/test.sh -k model -x
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/venv.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
record_install "" bbc test  # the test extras include bbc: the launch scripts the tests run skip pip
if [ "${MINILM_TEST_INTEROP:-1}" != "0" ] && ! .venv/bin/python -c 'import torch, transformers' 2>/dev/null; then
  # CPU torch for the Hugging Face export test (2.13.0 has a CPU wheel on the CI machines).
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" \
    "transformers>=4.46,<6" "safetensors>=0.4,<1" || echo "warning: torch/transformers not installed; interop tests will skip" >&2
fi
if [ "${MINILM_TEST_GPU_COMPILE:-1}" != "0" ] && [ ! -d .cache/gpu-compile/jax_plugins/xla_cuda12 ]; then
  # The CUDA plugin's wheels at jax's version, outside .venv (the suite's processes run without
  # them): tests/test_gpu_compile.py compiles the GPU programs deviceless with them (~460 MB).
  jax_version=$(.venv/bin/python -c 'import jax; print(jax.__version__)')
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target .cache/gpu-compile \
    "jax-cuda12-pjrt==$jax_version" "jax-cuda12-plugin==$jax_version" \
    || echo "warning: CUDA plugin wheels not installed; the deviceless GPU compile tests will skip" >&2
fi
# The project's bytecode, written once: where PYTHONDONTWRITEBYTECODE is set, every command a test
# starts would otherwise compile the project's modules from source again (~30 CPU-seconds a run).
.venv/bin/python -m compileall -q -j 0 minilm_jax tests > /dev/null
# -n auto: one worker a core and one more, at most one per 2 GiB (worker_count in tests/conftest.py)
exec .venv/bin/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=25 "$@" tests
