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
#   LANE_S=270 MODEL_S=420 bash bench/gpu_checks.sh
#                                                # the most seconds the lane and each model's bench may take
#   LANE=0 MODELS=qwen2.5-7b-instruct bash bench/gpu_checks.sh
#                                                # the bench alone (a second call, when one call's time limit
#                                                # cannot hold the lane and every shape)
#
# Exits non-zero when the GPU lane fails or the bench does; the other still runs, so one call gives both. Each
# step has its own time limit, so that a step that hangs (a Ray start, a 7B model that loads slowly) cannot take the
# time of the others; a stopped pytest still prints what passed (SIGINT, as Ctrl-C).
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

lane=0
if [ "${LANE:-1}" != 0 ]; then
  start=$SECONDS
  timeout -s INT -k 30 "${LANE_S:-270}" python3 -m pytest -m gpu -q -rA -p no:cacheprovider tests/test_gpu.py 2>&1 \
    | tee "$out/pytest_gpu.txt"
  lane=$?
  echo "pytest -m gpu: exit $lane in $((SECONDS - start)) s" | tee -a "$out/pytest_gpu.txt"
fi

# One bench process per model, smallest first, so each model's table is written as soon as it is measured.
bench=0
for model in $(echo "${MODELS:-qwen2.5-0.5b-instruct,qwen2.5-7b-instruct}" | tr ',' ' '); do
  start=$SECONDS
  timeout -k 30 "${MODEL_S:-420}" python3 bench/gpu.py --models "$model" 2>&1 | tee -a "$out/bench_gpu.txt"
  rc=$?
  echo "bench/gpu.py --models $model: exit $rc in $((SECONDS - start)) s" | tee -a "$out/bench_gpu.txt"
  [ "$rc" -eq 0 ] || bench=$rc
done

[ "$lane" -eq 0 ] && [ "$bench" -eq 0 ]
