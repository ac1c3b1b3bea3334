#!/usr/bin/env bash
# Builds the folder that travels to a device machine with scripts/gpu_run.sh (docs/gpu.md):
#   .carry/wheels/    wheels for Python 3.12 x86-64 of what bregflax imports and the device
#                     image lacks (WHEELS, at the versions installed here)
#   .carry/fer2013/   FER2013 train/ and val/ as the arrays source's lossless WebP sheets
# and checks that it travels: the carry folder plus the tree git would send under 64 MiB.
#
# Usage:  scripts/gpu_prepare.sh [--carry=DIR] [--data=DIR] [--no-wheels]
#   --data   folder with FER2013's train.npz and val.npz (default: ../shared/data/fer2013)
#   --no-wheels  skip the wheels and the import check (data and size only)
# Idempotent: a wheel already there or a split already converted is kept (delete
# .carry/fer2013 to convert again). PYTHON (default: python3) runs pip and bregflax.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
carry="$root/.carry"
data="$root/../shared/data/fer2013"
wheels=1
for arg in "$@"; do
  case "$arg" in
    --carry=*) carry="${arg#*=}" ;;
    --data=*) data="${arg#*=}" ;;
    --no-wheels) wheels=0 ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
py="${PYTHON:-python3}"
LIMIT=$((64 * 1024 * 1024))
# Imported by bregflax's training, the arrays source and the suite, absent from the image.
WHEELS="grain array_record portpicker ml_collections tensorboardX"
# The device image's Python packages (/work/.library/device/KINDS.md, read 2026-11-17).
DEVICE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py
mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja
numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark
pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp"

for split in train val; do
  if [[ ! -f "$data/$split.npz" ]]; then
    echo "error: $data/$split.npz not found: gpu_prepare.sh needs FER2013's train.npz and" \
      "val.npz (the shared data beside the checkout, ../shared/data/fer2013, or --data=DIR)" >&2
    exit 2
  fi
done
mkdir -p "$carry"
if [[ "$carry" == "$root"/* ]] && ! git -C "$root" check-ignore -q "$carry"; then
  echo "error: $carry is inside the checkout but not ignored by git: it would travel twice" >&2
  exit 2
fi

if ((wheels)); then
  mkdir -p "$carry/wheels"
  for name in $WHEELS; do
    version="$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")"
    stem="$(echo "$name" | tr 'A-Z-' 'a-z_')"  # a wheel file's name: lower case, '_' for '-'
    for old in "$carry/wheels/$stem"-*.whl; do  # one version of each: two stop the install
      if [[ -e "$old" && "$old" != "$carry/wheels/$stem-$version-"* ]]; then rm -v "$old"; fi
    done
    if compgen -G "$carry/wheels/$stem-$version-*.whl" >/dev/null; then
      echo "wheel $name $version: already there"
      continue
    fi
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux1_x86_64 -d "$carry/wheels" "$name==$version"
    echo "wheel $name $version: downloaded"
  done
  # Every distribution the run imports must be on the image or carried.
  DEVICE="$DEVICE" WHEELS="$WHEELS" CARRIED="$carry/wheels" PYTHONPATH="$root" "$py" - <<'EOF'
import importlib.metadata as md, os, pathlib, re, sys, zipfile
from packaging.requirements import Requirement
import tensorboardX  # noqa: F401  (bregflax.training.logger imports it when a run starts)
import benchmarks.gpu_suite  # noqa: F401  (everything else the run imports)
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
have = {norm(n) for n in (os.environ["DEVICE"] + " " + os.environ["WHEELS"]).split()}
dists = md.packages_distributions()
missing = set()
for top in {m.split(".")[0] for m in list(sys.modules)}:
    names = {norm(d) for d in dists.get(top, ())} - {"bregflax"}
    if names and not names & have:
        missing |= names
if missing:
    sys.exit(f"error: the run imports {sorted(missing)}, neither on the device image nor in "
             "WHEELS (scripts/gpu_prepare.sh): add them to WHEELS")
print("imports: every distribution the run imports is on the device image or carried")
# What each carried wheel requires (pip installs them with --no-deps there) must be there too.
device = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython",
          "extra": ""}
for wheel in sorted(pathlib.Path(os.environ["CARRIED"]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.partition(":")[2].strip())
            if (req.marker is None or req.marker.evaluate(device)) and norm(req.name) not in have:
                missing.add(f"{norm(req.name)} (for {wheel.name.split('-')[0]})")
if missing:
    sys.exit(f"error: the carried wheels require {sorted(missing)}, neither on the device "
             "image nor in WHEELS (scripts/gpu_prepare.sh): add them to WHEELS")
print("requirements: every carried wheel's requirements are on the device image or carried")
EOF
fi

if [[ -f "$carry/fer2013/train/sheets.json" && -f "$carry/fer2013/val/sheets.json" ]]; then
  echo "fer2013: already converted in $carry/fer2013"
else
  rm -rf "$carry/fer2013.partial"
  PYTHONPATH="$root" "$py" -m bregflax.data.convert "$data" "$carry/fer2013.partial" \
    --format=webp --splits=train,val
  rm -rf "$carry/fer2013"
  mv "$carry/fer2013.partial" "$carry/fer2013"
fi

bytes_of() { xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
carried=$(find "$carry" -type f -print0 | bytes_of)
tree=$(cd "$root" && git ls-files -z --cached --others --exclude-standard | bytes_of)
total=$((carried + tree))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "carry $carry: $(mib "$carried") ($(find "$carry" -type f | wc -l) files)"
(cd "$carry" && du -sh -- * | sed 's/^/  /')
echo "tree that travels (tracked and untracked-not-ignored files): $(mib "$tree")"
echo "total: $(mib "$total") of $(mib "$LIMIT")"
if ((total >= LIMIT)); then
  echo "error: over the 64 MiB a device call carries" >&2
  exit 1
fi
