#!/usr/bin/env bash
# The prepared GPU run (docs/gpu.md): environment and a GPU-against-CPU train step, train-step
# throughput against PyTorch, the input pipeline, Table II on FER2013 and the float16 BReGNet39.
#
# Usage:  scripts/gpu_run.sh [--scale=full|test] [--total-s=S] [--test-budget-s=S]
#                            [--no-test-first] [benchmarks/gpu_suite.py options]
# The full scale first runs the test scale (tiny models, about a minute) in the same command
# and goes on only if no stage of it failed (a stage its time guard stopped, exit 3, is slow,
# not broken: the full run goes on); else it stops with a one-line reason. The
# whole command ends within --total-s (default 570 s, under a device call's 600): the test
# scale gets --test-budget-s of work (90), the full scale min(--budget-s or 510, what is left),
# and each runs under `timeout` too, so a call stuck where the suite's own time guards cannot stop
# it is ended and its stage recorded as killed.
# Writes results.json, report.md, log.txt, runs.tar.gz and fer2013-paper.tar to $OUT when it
# is set, else to runs/gpu_run; the test scale ahead of the full one writes test/results.json
# and test/report.md there (7 files in all; a device call brings back 8). The full scale
# reads .carry/fer2013 (scripts/gpu_prepare.sh). The wheels in .carry/wheels are installed
# (into /tmp/bregflax-site) only when bregflax's imports fail. PYTHON (default: python3)
# sets the interpreter.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 2
out="${OUT:-$root/runs/gpu_run}"
py="${PYTHON:-python3}"
scale=full total=570 test_first=1 budget="" test_budget=90 pass=()
for arg in "$@"; do
  case "$arg" in
    --scale=*) scale="${arg#*=}" ;;
    --total-s=*) total="${arg#*=}" ;;
    --budget-s=*) budget="${arg#*=}" ;;
    --test-budget-s=*) test_budget="${arg#*=}" ;;
    --no-test-first) test_first=0 ;;
    *) pass+=("$arg") ;;
  esac
done
if [[ ! "$total$test_budget" =~ ^[0-9]+$ ]] ||
  [[ -n "$budget" && ! "$budget" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
  echo "error: --total-s and --test-budget-s take whole seconds, --budget-s seconds" >&2
  exit 2
fi
mkdir -p "$out" || exit 2
: >"$out/log.txt"
say() { echo "gpu_run: $*" | tee -a "$out/log.txt"; }
if ! "$py" -c "import grain, ml_collections, tensorboardX" 2>/dev/null; then
  wheels=("$root"/.carry/wheels/*.whl)
  if [[ ! -e "${wheels[0]}" ]]; then
    say "error: grain, ml_collections or tensorboardX is missing and there are no wheels in" \
      ".carry/wheels: run scripts/gpu_prepare.sh and name .carry in the run's carry" >&2
    exit 2
  fi
  site=/tmp/bregflax-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${wheels[@]}" 2>&1 | tee -a "$out/log.txt"
  ((PIPESTATUS[0] == 0)) || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false # PyTorch shares the GPU with JAX

# One scale: the suite under `timeout` (SIGTERM, then SIGKILL 5 s later), its output appended
# to log.txt; a scale that timeout ends has its running stage marked killed. Sets $rc.
run_scale() {
  local dir="$1" limit="$2"
  shift 2
  timeout --kill-after=5 "$limit" "$py" -m benchmarks.gpu_suite --out="$dir" "$@" 2>&1 |
    tee -a "$out/log.txt"
  rc=${PIPESTATUS[0]}
  if ((rc == 124 || rc == 137)); then
    timeout 20 "$py" -m benchmarks.gpu_suite --out="$dir" "$@" \
      --mark-killed="killed by timeout after ${limit} s (exit $rc)" 2>&1 | tee -a "$out/log.txt"
  fi
}

# The statuses of the stages that did not end well in DIR/results.json, on one line.
failures() {
  "$py" - "$1/results.json" <<'EOF' 2>/dev/null || echo "no results.json"
import json, sys
stages = json.load(open(sys.argv[1]))["stages"]
bad = [f"{n} {r['status']}" for n, r in stages.items() if r["status"] not in ("ok", "skipped")]
print(", ".join(bad) or "none")
EOF
}

left() { echo $((total - SECONDS)); }

if [[ "$scale" == full && "$test_first" == 1 ]]; then
  scratch="$(mktemp -d /tmp/bregflax-gpu-test.XXXXXX)" || exit 2
  say "test scale first (budget ${test_budget} s)"
  run_scale "$scratch/out" $((test_budget + 20 + test_budget / 4)) --scale=test \
    --budget-s="$test_budget" --work="$scratch/work"
  mkdir -p "$out/test"
  for name in results.json report.md; do # the tars of tiny models stay behind
    [[ -f "$scratch/out/$name" ]] && cp "$scratch/out/$name" "$out/test/$name"
  done
  rm -rf "$scratch"
  if ((rc != 0 && rc != 3)); then
    say "the full run is skipped: the test scale failed (exit $rc; $(failures "$out/test")):" \
      "see test/report.md and log.txt"
    exit "$rc"
  fi
  say "test scale passed after $SECONDS s (exit $rc; not ok: $(failures "$out/test"));" \
    "the full run follows"
fi

if [[ "$scale" == full ]]; then
  # Python's start and imports, the tars and a killed stage's marking stay outside the budget.
  room=$(($(left) - 40))
  budget="${budget:-510}"
  budget=$(awk -v b="$budget" -v r="$room" 'BEGIN {print (b < r ? b : r)}')
  if awk -v b="$budget" 'BEGIN {exit !(b < 60)}'; then
    say "the full run is skipped: only ${budget} s of work would fit --total-s=$total"
    exit 1
  fi
  run_scale "$out" $(($(left) - 10)) --scale=full --budget-s="$budget" "${pass[@]}"
else
  run_scale "$out" $(($(left) - 10)) --scale="$scale" ${budget:+--budget-s="$budget"} \
    "${pass[@]}"
fi
say "done after $SECONDS s (exit $rc)"
exit "$rc"
