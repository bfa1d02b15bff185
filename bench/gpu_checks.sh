#!/usr/bin/env bash
# Every GPU check in one command: the GPU lane (pytest -m gpu) and bench/gpu.py, each log also written under
# $OUT (default gpu-results/), with the GPU, driver and library versions that produced them.
#
#   bash bench/gpu_checks.sh                     # an environment set up with pip install -e ".[test,bench,ray]"
#   WHEELS=/path/to/wheels bash bench/gpu_checks.sh
#                                                # a machine with torch but no network: installs every wheel
#                                                # in that folder (no dependency resolution) and uses them first
#   MODELS=qwen2.5-0.5b-instruct bash bench/gpu_checks.sh
#                                                # bench/gpu.py's shapes (default: the 0.5B and the 7B Qwen2.5)
#
# Exits non-zero when the GPU lane fails or the bench does; the other still runs, so one call gives both.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
if [ -n "${WHEELS:-}" ]; then
  site=${TMPDIR:-/tmp}/ftsweep-site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl \
    || { echo "bench/gpu_checks.sh: installing the wheels in $WHEELS failed (above)" >&2; exit 1; }
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 - <<'EOF'
import importlib.metadata as md
for name in ["torch", "transformers", "peft", "bitsandbytes", "trl", "datasets", "hydra-core", "ray", "liger-kernel",
             "flash-attn"]:
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (not installed)")
EOF
} 2>&1 | tee "$out/versions.txt"

start=$SECONDS
python3 -m pytest -m gpu -q -rA -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/pytest_gpu.txt"
lane=$?
echo "pytest -m gpu: exit $lane in $((SECONDS - start)) s" | tee -a "$out/pytest_gpu.txt"

start=$SECONDS
python3 bench/gpu.py --models "${MODELS:-qwen2.5-0.5b-instruct,qwen2.5-7b-instruct}" 2>&1 | tee "$out/bench_gpu.txt"
bench=$?
echo "bench/gpu.py: exit $bench in $((SECONDS - start)) s" | tee -a "$out/bench_gpu.txt"

[ "$lane" -eq 0 ] && [ "$bench" -eq 0 ]
