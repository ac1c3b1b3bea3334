#!/usr/bin/env bash
# Runs N bregflax processes on this machine over loopback (127.0.0.1), on CPU, as a
# stand-in for a multi-host cluster: for development and for the multi-process tests.
#
# Needs: bregflax installed (pip install -e .), run from the repository root.
# Usage:  launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS -- MAIN_ARGS...
# Example:
#   launch/local.sh 2 2 -- --config=configs/demo.py --workdir=runs/local2x2
# Each process's output goes to <workdir>/process_<i>.log; the script waits for all of
# them and exits non-zero if any failed. PORT (default: a free one) sets the coordinator port,
# PYTHON (default: python) the interpreter.
set -euo pipefail
if [[ $# -lt 3 || "$3" != "--" ]]; then
  sed -n '2,12p' "$0"; exit 2
fi
n="$1"; devices="$2"; shift 3
port="${PORT:-$("${PYTHON:-python}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
workdir=$(printf '%s\n' "$@" | sed -n 's/^--workdir=//p' | tail -1)
logdir="${workdir:-.}"
mkdir -p "$logdir"
export JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="$devices" JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
pids=()
for ((i = 0; i < n; i++)); do
  "${PYTHON:-python}" -m bregflax.main "$@" --multihost --coordinator_address="127.0.0.1:$port" \
    --num_processes="$n" --process_id="$i" >"$logdir/process_$i.log" 2>&1 &
  pids+=("$!")
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $logdir/process_$i.log" >&2
    status=1
  fi
done
exit "$status"
