#!/usr/bin/env bash
# bregflax on a Cloud TPU pod slice: creates the TPU VM (or reuses it), installs Python 3.12,
# bregflax and jax[tpu] on every worker, and starts training on all workers at once,
# detached from the SSH session (nohup + setsid), each worker logging to ~/bregflax-train.log.
#
# Needs: the gcloud CLI, authenticated, with a project and TPU quota; a Cloud Storage bucket
# for the workdir (every worker must see the same workdir: --workdir=gs://BUCKET/runs/NAME)
# and the dataset; this repository pushed somewhere the workers can clone from (REPO).
# JAX on TPU detects the pod itself: jax.distributed.initialize() needs no arguments.
#
# Example (a v4-32 slice: 16 chips, 4 workers; global batch 2048 = 512 per worker):
#   TPU_NAME=bregflax-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 \
#   REPO=https://example.org/you/bregflax.git \
#   launch/tpu_pod.sh --config=configs/affectnet.py \
#       --workdir=gs://BUCKET/runs/affectnet --config.batch_size=2048
# Any arguments are passed to `python -m bregflax.main` unchanged. The runtime image follows
# the TPU generation of ACCELERATOR (v4-*, v5litepod-* (v5e), v5p-*, v6e-*; RUNTIME overrides).
#   launch/tpu_pod.sh --dry-run ARGS   prints every command it would run, runs none
#   launch/tpu_pod.sh --logs [LINES]   the last LINES (100) of every worker's training log
set -euo pipefail
usage() { sed -n '2,20p' "$0"; exit 2; }
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
BRANCH="${BRANCH:-main}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
LOG='~/bregflax-train.log'  # on each worker; expanded there

runtime_for() {  # the TPU software version of an accelerator type (cloud.google.com/tpu/docs/runtimes)
  case "$1" in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

run() {  # runs its arguments, or prints them (shell-quoted) under --dry-run
  if ((DRY_RUN)); then printf '%q ' "$@"; echo; else "$@"; fi
}

run_all() {  # one command on every worker (printed as a runnable here-document by --dry-run)
  local ssh=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all)
  if ((DRY_RUN)); then
    printf '%q ' "${ssh[@]}"
    printf -- "--command \"\$(cat <<'REMOTE'\n%s\nREMOTE\n)\"\n" "$1"
  else
    "${ssh[@]}" --command "$1"
  fi
}

if [[ "${1:-}" == "--logs" ]]; then
  run_all "tail -n ${2:-100} $LOG"
  exit 0
fi
[[ $# -eq 0 ]] && usage
: "${REPO:?set REPO (git URL of bregflax)}"
if ! RUNTIME="${RUNTIME:-$(runtime_for "$ACCELERATOR")}"; then
  echo "error: unknown ACCELERATOR $ACCELERATOR (v4-N, v5litepod-N, v5p-N or v6e-N); or set RUNTIME" >&2
  exit 2
fi
workdir=$(printf '%s\n' "$@" | sed -n 's/^--workdir=//p' | tail -1)
if [[ "$workdir" != gs://* ]]; then
  echo "error: --workdir=gs://BUCKET/PATH is needed: every worker must write the same workdir" >&2
  exit 2
fi

if ((DRY_RUN)); then
  echo "# if 'describe' fails, the TPU VM is created:"
  run gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE"
  run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
    --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
elif ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  echo "creating $TPU_NAME ($ACCELERATOR, $RUNTIME) in $ZONE"
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
    --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
else
  echo "reusing $TPU_NAME"
fi

# The TPU images ship Python 3.10; bregflax needs 3.11+ and current jax 3.12: uv brings its own.
args=$(printf ' %q' "$@")
run_all "set -e
  if [ ! -d bregflax ]; then git clone --branch $BRANCH $REPO bregflax; fi
  cd bregflax && git fetch -q && git checkout -q $BRANCH && git pull -q
  command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
  export PATH=\$HOME/.local/bin:\$PATH
  uv venv -q --allow-existing --python $PYTHON_VERSION ~/venv
  uv pip install -q --python ~/venv/bin/python -e '.[gcs]' 'jax[tpu]'"
run_all "cd bregflax && setsid nohup ~/venv/bin/python -m bregflax.main --multihost$args \
  > $LOG 2>&1 < /dev/null & echo \"started on \$(hostname): $LOG\""
echo "training detached on every worker; its log: launch/tpu_pod.sh --logs"
