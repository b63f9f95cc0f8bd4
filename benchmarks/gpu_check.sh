#!/usr/bin/env bash
# One prepared check for a machine with CUDA (and, with --device cpu, for any machine): the tests marked gpu,
# speed (pair520, pair2700, the 26 gacn26 pairs with I/O, V-4 end to end with alignment on and off, host-only
# V-4), CPU/device parity on gacn26, and (where Dask is installed) 8 stacks on 2 local Dask workers. Writes OUT/gpu-check.json and OUT/gpu-check.md (and the logs).
#
#   bash benchmarks/gpu_check.sh                      # CUDA, ../shared beside the checkout, results in gpu-check/
#   bash benchmarks/gpu_check.sh --device cpu         # the same end to end on the CPU (how it is tested)
#   bash benchmarks/gpu_check.sh --shared DIR --out DIR --wheels DIR --repeats 3
#
# Runs from a copy of the repository, offline, on a stock PyTorch image (numpy, opencv-python-headless,
# tifffile, imageio, rich, click, scipy, scikit-image, pillow, pytest): focusfuse is used from src/ without
# installing it; --wheels installs the wheels of a folder (e.g. platformdirs) into a private site folder first.
set -uo pipefail

device=cuda
shared=""
out=gpu-check
wheels=""
repeats=5
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --shared) shared="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
shared="${shared:-$root/../shared}"
if [ ! -d "$shared/data" ]; then
  echo "gpu_check.sh: no shared data at $shared (pass --shared DIR)" >&2
  exit 2
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
python="${PYTHON:-python3}"
if [ -n "$wheels" ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/focusfuse-site \
    "$wheels"/*.whl || { echo "gpu_check.sh: installing the wheels of $wheels failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/focusfuse-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export FOCUSFUSE_SHARED="$shared" FOCUSFUSE_TEST_DEVICE="$device" PYTHONUNBUFFERED=1
export XDG_DATA_HOME="$out/data"  # weights installed by the training smoke test stay here

started=$(date +%s)
echo "== environment" | tee "$out/log.txt"
"$python" - <<'EOF' 2>&1 | tee -a "$out/log.txt"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"GPU {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF

echo "== tests marked gpu (device $device)" | tee -a "$out/log.txt"
"$python" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py --junitxml="$out/gpu-tests.xml" 2>&1 \
  | tee -a "$out/log.txt"

echo "== speed" | tee -a "$out/log.txt"
"$python" benchmarks/speed.py --device "$device" --repeats "$repeats" \
  --cases pair520,pair2700,gacn26,v4,v4none,v4wavelet,v4host --json "$out/speed.json" 2>&1 | tee -a "$out/log.txt"

echo "== CPU/$device parity on gacn26" | tee -a "$out/log.txt"
"$python" benchmarks/device_parity.py --device "$device" --json "$out/parity.json" 2>&1 | tee -a "$out/log.txt"

if "$python" -c "import distributed" 2>/dev/null; then
  echo "== Dask: 8 stacks, 1 process vs 2 local workers sharing the device" | tee -a "$out/log.txt"
  "$python" benchmarks/cluster.py stacks --weights weights/focusfuse-gacn.pt --device "$device" 2>&1 \
    | tail -1 | tee -a "$out/log.txt"
else
  echo "== Dask: not installed here, skipped" | tee -a "$out/log.txt"
fi

"$python" benchmarks/gpu_summary.py "$out" --device "$device" --seconds $(( $(date +%s) - started )) 2>&1 \
  | tee -a "$out/log.txt"
