#!/usr/bin/env bash
# Copies the raw results of reproduce's finished runs into the repository, so that their
# tables re-render with `bregflax reproduce --report_only` from any checkout:
#
#   scripts/collect_results.sh RUNS_WORKDIR results/<study>
#
# For each RUNS_WORKDIR/<scale>/<run>/ with a result.json, copies result.json and
# metrics.jsonl (nothing else: no checkpoints, no caches) to results/<study>/<scale>/<run>/.
# Unfinished runs are left out; a run copied before is replaced by its newer files.
set -euo pipefail
usage="usage: collect_results.sh RUNS_WORKDIR DEST"
src=$(realpath "${1:?$usage}")
dest=${2:?$usage}
n=0
for result in "$src"/*/*/result.json; do
  [ -e "$result" ] || continue
  run=$(dirname "$result")
  target="$dest/$(basename "$(dirname "$run")")/$(basename "$run")"
  mkdir -p "$target"
  for f in result.json metrics.jsonl; do
    if [ -e "$run/$f" ]; then
      cp "$run/$f" "$target/.$f.tmp" && mv "$target/.$f.tmp" "$target/$f"
    fi
  done
  n=$((n + 1))
done
echo "copied $n finished run(s) to $dest"
