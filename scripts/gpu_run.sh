#!/usr/bin/env bash
# The prepared GPU run (docs/gpu.md): environment and a GPU-against-CPU train step, train-step
# throughput against PyTorch, the input pipeline, Table II on FER2013 and the float16 BReGNet39.
#
# Usage:  scripts/gpu_run.sh [--scale=full|test] [benchmarks/gpu_suite.py options]
# Writes results.json, report.md, log.txt, runs.tar.gz and fer2013-paper.tar to $OUT when it
# is set, else to runs/gpu_run. The full scale reads .carry/fer2013 (scripts/gpu_prepare.sh)
# and keeps to 510 s of work (--budget-s); --scale=test runs tiny models on any machine.
# The wheels in .carry/wheels are installed (into /tmp/bregflax-site) only when bregflax's
# imports fail. PYTHON (default: python3) sets the interpreter.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 2
out="${OUT:-$root/runs/gpu_run}"
py="${PYTHON:-python3}"
mkdir -p "$out" || exit 2
if ! "$py" -c "import grain, ml_collections, tensorboardX" 2>/dev/null; then
  wheels=("$root"/.carry/wheels/*.whl)
  if [[ ! -e "${wheels[0]}" ]]; then
    echo "error: grain, ml_collections or tensorboardX is missing and there are no wheels in" \
      ".carry/wheels: run scripts/gpu_prepare.sh and name .carry in the run's carry" >&2
    exit 2
  fi
  site=/tmp/bregflax-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${wheels[@]}" || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # PyTorch shares the GPU with JAX
"$py" -m benchmarks.gpu_suite --out="$out" "$@" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
