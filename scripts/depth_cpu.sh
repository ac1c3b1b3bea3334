#!/usr/bin/env bash
# The depth study at CPU scale (issue 29): every run of `bregflax reproduce --table=depth`,
# trained by one worker per core, each taking the next run no one holds.
#
#   scripts/depth_cpu.sh WORKDIR DATA_DIR [SRC]
#
# WORKDIR gets the runs (WORKDIR/<scale>/<run>), the workers' logs (WORKDIR/worker_<core>.log)
# and depth.md; DATA_DIR holds FER2013 as TFDS (scripts/prepare_fer2013.py); SRC is the source
# tree to run, a git worktree at a fixed commit so that later edits cannot change a running
# experiment (default: this checkout). Runs are taken in `reproduce --list_runs` order (the
# sweep seed by seed, shallow to deep, then the other arms); a worker holds a run by an flock
# on WORKDIR/locks/<run>.lock, released when its process ends, so a run is never trained
# twice at once and one left by a session's end is taken again, resuming from its last
# checkpoint. Safe to start again at any time; finished runs are skipped. When every run is
# done, one more call (training nothing) writes depth.md.
# To free the cores for a while: pkill -STOP / -CONT -f "bregflax.paper.reproduce --table=depth".
# SCALE=test EPOCHS=2 runs the same on the synthetic faces in a minute or two (the test suite
# does); DATA_DIR is then unused.
set -euo pipefail
usage="usage: depth_cpu.sh WORKDIR DATA_DIR [SRC]"
workdir=$(realpath -m "${1:?$usage}")
data=$(realpath -m "${2:?$usage}")
src=$(realpath "${3:-$(dirname "$0")/..}")
python=${PYTHON:-python}
scale=${SCALE:-cpu}
epochs=${EPOCHS:-10}
workers=${WORKERS:-$(nproc)}
mkdir -p "$workdir/locks"

reproduce() {  # cores, then reproduce's own arguments
  local cores=$1
  shift
  (cd "$src" && PYTHONPATH="$src" taskset -c "$cores" "$python" -m bregflax.reproduce \
    --table=depth --scale="$scale" --workdir="$workdir" --data_dir="$data" \
    --set num_epochs="$epochs" --set progress_bar=False "$@")
}

mapfile -t runs < <(reproduce "0-$(($(nproc) - 1))" --list_runs)

worker() {  # core
  local core=$1 run fd
  for run in "${runs[@]}"; do
    [ -e "$workdir/$scale/$run/result.json" ] && continue
    exec {fd}>"$workdir/locks/$run.lock"
    if flock -n "$fd"; then
      echo "== $(date -u +%FT%TZ) worker $core: $run"
      reproduce "$core" --compile_cache="$workdir/jax_cache_$core" --run="$run" \
        || echo "== $(date -u +%FT%TZ) worker $core: $run failed (exit $?)"
    fi
    exec {fd}>&-
  done
}

echo "== $(date -u +%FT%TZ) source $(git -C "$src" rev-parse HEAD 2>/dev/null || echo "$src")" \
  | tee -a "$workdir/worker_0.log"
pids=()
for ((core = 0; core < workers; core++)); do
  worker $((core % $(nproc))) >>"$workdir/worker_$core.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
missing=0
for run in "${runs[@]}"; do [ -e "$workdir/$scale/$run/result.json" ] || missing=$((missing + 1)); done
if [ "$missing" -gt 0 ]; then
  echo "$missing run(s) not finished; see $workdir/worker_*.log" >&2
  exit 1
fi
reproduce "0-$(($(nproc) - 1))" --compile_cache="$workdir/jax_cache_0" --report_only \
  | tee -a "$workdir/worker_0.log"
exit $status
