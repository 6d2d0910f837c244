#!/usr/bin/env bash
# The GPU checks (experiments/gpu/run.py), at most about 8 minutes on one H100/H200-class GPU.
# Where resnas's dependencies are not installed (a bare GPU machine), wheels carried in .whl/ are
# installed into /tmp/site first. --dry-run checks every step on the CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import optuna" 2>/dev/null && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
exec timeout 540 "$PY" experiments/gpu/run.py "$@"
