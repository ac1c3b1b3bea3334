#!/usr/bin/env bash
# The paper's claims at CPU scale (issue 16): 25 runs of 10 epochs on FER2013 in two queues,
# one per core, each a list of `bregflax reproduce --table=claims` calls for one arm and seed.
#
#   scripts/claims_cpu.sh WORKDIR DATA_DIR [SRC]
#
# WORKDIR gets the runs (WORKDIR/cpu/<run>), the logs (WORKDIR/queue_{A,B}.log) and claims.md;
# DATA_DIR holds FER2013 as TFDS (scripts/prepare_fer2013.py); SRC is the source tree to run,
# a git worktree at a fixed commit so later edits cannot change a running experiment (default:
# this checkout). Safe to run again after a session ended it: finished runs are skipped and an
# interrupted run resumes from its last checkpoint. Two single-core processes train faster than
# one with both cores (measured on the 2-core development machine on 2026-11-30: 2 x 170
# against 275 images/s). Queue A runs the claims' A arms and queue B their B arms, seed by
# seed, so each pair finishes together; H2's last seed goes to B so that both queues take
# about 7.2 hours (one core, measured: an H3 run about 33 minutes, identity 29, depth-27 about
# 55). When both end, one more call (every run skipped) writes the full table.
# To free the cores for a while: kill -STOP / -CONT the two python processes (training
# resumes where it was; only that step's images/s is lost to the median).
# SCALE=test EPOCHS=2 runs the same queues on the synthetic faces in a minute or two (the test
# suite does); DATA_DIR is then unused.
set -euo pipefail
usage="usage: claims_cpu.sh WORKDIR DATA_DIR [SRC]"
workdir=$(realpath -m "${1:?$usage}")
data=$(realpath "${2:?$usage}")
src=$(realpath "${3:-$(dirname "$0")/..}")
python=${PYTHON:-python}
scale=${SCALE:-cpu}
epochs=${EPOCHS:-10}
mkdir -p "$workdir"
cores=$(nproc)

reproduce() {  # cores, then reproduce's own arguments
  local core=$1
  shift
  (cd "$src" && PYTHONPATH="$src" taskset -c "$core" "$python" -m bregflax.reproduce \
    --table=claims --scale="$scale" --workdir="$workdir" --data_dir="$data" \
    --set num_epochs="$epochs" --set progress_bar=False "$@")
}

queue() {  # name, core, then steps "claim only-token seed"
  local name=$1 core=$2
  shift 2
  for step in "$@"; do
    read -r claim only seed <<<"$step"
    echo "== $(date -u +%FT%TZ) queue $name: --claims=$claim --only=$only --seeds=$seed"
    reproduce "$core" --compile_cache="$workdir/jax_cache_$name" \
      --claims="$claim" --only="$only" --seeds="$seed"
  done
}

queue_a=() queue_b=()
for s in 0 1 2 3 4; do
  queue_a+=("h3_vs_identity h3 $s") queue_b+=("h3_vs_identity resnet $s")
done
for s in 0 1 2; do
  queue_a+=("weighted_h3 weighted $s") queue_b+=("depth resnet $s")
done
for s in 0 1 2; do
  queue_a+=("h3_vs_h1 h1 $s") queue_b+=("weighted_identity weighted $s")
done
queue_a+=("h3_vs_h2 h2 0" "h3_vs_h2 h2 1") queue_b+=("h3_vs_h2 h2 2")

echo "== $(date -u +%FT%TZ) source $(git -C "$src" rev-parse HEAD 2>/dev/null || echo "$src")" \
  | tee -a "$workdir/queue_A.log" "$workdir/queue_B.log"
queue A 0 "${queue_a[@]}" >>"$workdir/queue_A.log" 2>&1 &
pid_a=$!
queue B $((cores > 1 ? 1 : 0)) "${queue_b[@]}" >>"$workdir/queue_B.log" 2>&1 &
pid_b=$!
status=0
wait $pid_a || status=$?
wait $pid_b || status=$?
if [ $status -ne 0 ]; then
  echo "a queue failed (exit $status); see $workdir/queue_{A,B}.log" >&2
  exit $status
fi
reproduce "0-$((cores - 1))" --compile_cache="$workdir/jax_cache_A" | tee -a "$workdir/queue_A.log"
