#!/usr/bin/env bash
# One prepared GPU session (~8 minutes): build the extension, run the tests with the GPU, run the
# benchmarks, and leave everything under $OUT. Run from anywhere inside the checkout:
#
#     OUT=/some/folder bash benchmarks/gpu_run.sh
#
# Knobs (environment): PYTHON (default python3), DEADLINE_S (default 540: every stage's timeout is
# cut to fit), SKIP_BUILD=1, SKIP_TESTS=1, TORCH_CUDA_ARCH_LIST (default: the visible GPU's);
# DRY_RUN=1 rehearses the whole script on the CPU with tiny shapes (no build, no tests).
# Writes to $OUT: gpu_run.log, build.log, pytest.log, report.md, results.tar.gz (the folder
# benchmarks/results/<device-slug>/; unpack with `tar xzf results.tar.gz -C benchmarks/results`).
set -uo pipefail

: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-540}
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

say() { printf '[gpu_run %4ds] %s\n' "$SECONDS" "$*"; }
# timeout for a stage: at most $1 seconds, and never past the deadline minus 20 s for packing.
budget() {
  local left=$((DEADLINE_S - SECONDS - 20))
  [ "$left" -lt 30 ] && left=30
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

say "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
DEV=cuda
OP_ARGS=(--full --min-run-time 0.1 --compile-dtypes float16
         --compile-shapes infer-1024,infer-2048,train-L1,train-L2,train-L4)
MODEL_ARGS=(--model-compile infer)
if [ "${DRY_RUN:-0}" = 1 ]; then
  DEV=cpu SKIP_BUILD=1 SKIP_TESTS=1
  OP_ARGS=(--quick --shapes infer-128,infer-256 --no-compile --min-run-time 0.02 --threads 1)
  MODEL_ARGS=(--presets tiny --train-batch 1 --train-size 16 --infer-sizes 16,32 --min-run-time 0.02 --threads 1)
  say "DRY_RUN: rehearsal on the CPU with tiny shapes"
fi
[ "$DEV" = cpu ] || $PY - <<'EOF' || { say "python/torch/CUDA not usable: stopping"; exit 1; }
import torch, sys
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else 'NONE'}")
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton not installed")
assert torch.cuda.is_available(), "torch sees no CUDA device"
EOF

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  arch=${TORCH_CUDA_ARCH_LIST:-$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
  t=$(budget 200)
  say "building ddsa_kernels._C in place (TORCH_CUDA_ARCH_LIST=$arch, timeout ${t}s)"
  if TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=${MAX_JOBS:-16} timeout "$t" \
      $PY setup.py build_ext --inplace >"$OUT/build.log" 2>&1; then
    say "build ok"
  else
    say "build FAILED (rc $?); tail of build.log:"; tail -n 25 "$OUT/build.log"
  fi
fi
$PY -c 'import ddsa_kernels; print("backends:", ddsa_kernels.build_info())'

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  t=$(budget 150)
  say "tests: every GPU test plus the default suite (-m 'gpu or not slow'), timeout ${t}s"
  xdist=""
  $PY -c 'import xdist' 2>/dev/null && xdist="-n 8"
  timeout "$t" $PY -m pytest tests -q -m "gpu or not slow" $xdist -p no:cacheprovider >"$OUT/pytest.log" 2>&1
  say "pytest rc $? — $(tail -n 1 "$OUT/pytest.log")"
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -n 20
fi

slug=$($PY -c "import torch; from benchmarks.common import device_slug; print(device_slug(torch.device('$DEV')))")
RES="benchmarks/results/$slug"
[ "${DRY_RUN:-0}" = 1 ] && RES="$(mktemp -d)/$slug"
mkdir -p "$RES"
pack() {
  tar czf "$OUT/results.tar.gz" -C "$(dirname "$RES")" "$slug"
  [ -f "$RES/report.md" ] && cp "$RES/report.md" "$OUT/report.md"
}

t=$(budget 210)
say "op benchmark -> $RES (timeout ${t}s)"
timeout "$t" $PY -m benchmarks op --device "$DEV" --out "$RES" "${OP_ARGS[@]}" \
  --time-budget $((t > 80 ? t - 40 : t / 2))
say "op benchmark rc $?"
pack

t=$(budget 170)
say "model benchmark -> $RES (timeout ${t}s)"
timeout "$t" $PY -m benchmarks model --device "$DEV" --out "$RES" "${MODEL_ARGS[@]}" \
  --time-budget $((t > 120 ? t - 60 : t / 2))
say "model benchmark rc $?"
$PY -m benchmarks report --out "$RES"
pack
say "goals:"
sed -n '/^## Goals/,/^## Op/p' "$RES/report.md" | grep '^|' || true
say "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
