#!/usr/bin/env bash
# bregflax on a Cloud TPU pod slice: creates the TPU VM (or reuses it), installs bregflax
# on every worker, and starts training on all workers at once.
#
# Needs: the gcloud CLI, authenticated, with a project and TPU quota; a GCS bucket or
# persistent disk for the dataset and the workdir (every worker must see the same workdir,
# e.g. gs://BUCKET/runs/NAME through orbax's GCS support); this repository pushed somewhere
# the workers can clone from (REPO).
# JAX on TPU detects the pod itself: jax.distributed.initialize() needs no arguments.
#
# Example (a v4-32 slice: 16 chips, 4 workers; global batch 2048 = 512 per worker):
#   TPU_NAME=bregflax-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 \
#   REPO=https://example.org/you/bregflax.git \
#   launch/tpu_pod.sh --config=configs/affectnet.py \
#       --workdir=gs://BUCKET/runs/affectnet --config.batch_size=2048
# Any arguments are passed to `python -m bregflax.main` unchanged.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${REPO:?set REPO (git URL of bregflax)}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
BRANCH="${BRANCH:-main}"
if [[ $# -eq 0 ]]; then
  sed -n '2,17p' "$0"; exit 2
fi

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  echo "creating $TPU_NAME ($ACCELERATOR) in $ZONE"
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
    --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
else
  echo "reusing $TPU_NAME"
fi

run_all() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"
}

args=$(printf ' %q' "$@")
run_all "set -e
  if [ ! -d bregflax ]; then git clone --branch $BRANCH $REPO bregflax; fi
  cd bregflax && git fetch -q && git checkout -q $BRANCH && git pull -q
  python3 -m venv ~/venv && . ~/venv/bin/activate
  pip install -q -U pip && pip install -q -e . 'jax[tpu]'"
run_all "cd bregflax && . ~/venv/bin/activate && python -m bregflax.main --multihost$args"
