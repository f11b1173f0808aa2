#!/usr/bin/env bash
# One prepared GPU session, in stages, each under its own time cap and each leaving its results in
# $OUT as soon as it ends (a later crash or timeout keeps them). Run from anywhere in the checkout:
#
#     OUT=/some/folder bash ddsa_bench/gpu/run.sh          # or: ddsa-bench gpu-run --out /some/folder
#     DRY_RUN=1 OUT=/tmp/x bash ddsa_bench/gpu/run.sh      # every stage's code path on the CPU, seconds
#
# Stages (cap in seconds; DEADLINE_S, default 540, cuts every cap to what is left):
#   1 build       150  compile ddsa_kernels._C in place for this GPU's arch; versions -> env.json
#   2 gpu_tests   340  in parts, each under its own cap (gpu/stages.py TEST_PARTS): every GPU test file,
#                      the op's test files on the GPU, the >2³¹-element test last -> tests_gpu.json
#   3 sanitize     70  compute-sanitizer memcheck + racecheck, small fwd+bwd per backend -> sanitize.json
#   4 op_bench    110  per-kernel breakdown (kernels.json), then the op benchmark (op.json, report.md)
#   5 train        60  ddsa-official AMP training step, fused vs eager; batch-1 peak memory -> train.json
#   6 patch        45  ddsa_kernels.patch on the three families' networks, bf16 and fp16 -> patch.json
#   7 rest_tests  rest the remaining test suite -> tests_rest.json
# After every stage: stages.json, summary.json and summary.md (device, versions, commit, what ran or
# was skipped and why, the measured tables). Copy $OUT/*.json $OUT/*.png to
# ddsa_bench/results/<device-slug>/ (the slug is in env.json and summary.md), then render its page:
# ddsa-bench report --device ddsa_bench/results/<device-slug>.
#
# Knobs: PYTHON (default python3), DEADLINE_S, CAP_SCALE (caps × this; 4 under DRY_RUN), MAX_JOBS (default: CPU count), TORCH_CUDA_ARCH_LIST
# (default: the visible GPU's capability), SKIP_BUILD=1, DRY_RUN=1.
set -uo pipefail

: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DRY=${DRY_RUN:-0}
# A rehearsal on a (possibly busy) CPU has no lease to protect: its caps and deadline are 4× wider,
# so a slow machine still runs every stage's code path to its end.
if [ "$DRY" = 1 ]; then CAP_SCALE=${CAP_SCALE:-4}; else CAP_SCALE=${CAP_SCALE:-1}; fi
DEADLINE_S=${DEADLINE_S:-$((540 * CAP_SCALE))}
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

say() { printf '[gpu_run %4ds] %s\n' "$SECONDS" "$*"; }
# cap of a stage: at most $1 seconds, never past the deadline (at least 10 s, to record a skip).
cap() {
  local want=$(($1 * CAP_SCALE)) left=$((DEADLINE_S - SECONDS))
  [ "$left" -lt 10 ] && left=10
  [ "$left" -lt "$want" ] && echo "$left" || echo "$want"
}
stages() { $PY -m ddsa_bench.gpu.stages "$@"; }
book() { $PY -m ddsa_bench.summary "$@"; }
# record NAME STATUS RC SECONDS CAP REASON FILES...: stages.json, then summary.{json,md}
record() {
  local name=$1 status=$2 rc=$3 secs=$4 cap_s=$5 reason=$6
  shift 6
  book stage --out "$OUT" --name "$name" --status "$status" --rc "$rc" --seconds "$secs" --cap "$cap_s" \
    --reason "$reason" --files "$@" || say "could not record stage $name"
  say "stage $name: $status (rc $rc, ${secs}s of ${cap_s}s) $reason"
}
# run_stage NAME CAP REASON_IF_OK FILES -- COMMAND...: run under `timeout`, record the outcome.
run_stage() {
  local name=$1 cap_s=$2 note=$3 files=$4
  shift 5
  local t0=$SECONDS rc
  say "stage $name (cap ${cap_s}s): $*"
  timeout --kill-after=10 "$cap_s" "$@"
  rc=$?
  local status=ok reason=$note
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=timeout reason="hit the ${cap_s}s cap; $note"
  elif [ $rc -ne 0 ]; then status=failed
  fi
  # shellcheck disable=SC2086
  record "$name" "$status" "$rc" $((SECONDS - t0)) "$cap_s" "$reason" $files
  return 0
}

DEV=cuda
if [ "$DRY" = 1 ]; then
  DEV=cpu
  say "DRY_RUN: every stage on the CPU with tiny shapes; what needs CUDA is skipped with the reason"
elif ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  say "torch sees no CUDA device: stopping (use DRY_RUN=1 for a CPU rehearsal)"
  $PY -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
  exit 1
fi
DRYFLAG=()
[ "$DRY" = 1 ] && DRYFLAG=(--dry-run)
rm -f "$OUT/stages.json"

# ---------------------------------------------------------------- 1. build + env.json
# `setup.py build_ext --inplace` and not `pip install -e .`: on a fresh, offline machine pip would try
# to resolve the dependencies; building in place needs only torch, setuptools (and ninja if present).
t0=$SECONDS
c=$(cap 150)
if [ "$DRY" = 1 ] || [ "${SKIP_BUILD:-0}" = 1 ]; then
  why=$([ "$DRY" = 1 ] && echo "DRY_RUN: no CUDA build on the CPU" || echo "SKIP_BUILD=1")
  stages env --out "$OUT" --device "$DEV" --build-skipped "$why"
  rc=$?
  record build "$([ $rc -eq 0 ] && echo skipped || echo failed)" "$rc" $((SECONDS - t0)) "$c" "$why" env.json
else
  arch=${TORCH_CUDA_ARCH_LIST:-$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
  jobs=${MAX_JOBS:-$(nproc)}
  cmd="TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$jobs $PY setup.py build_ext --inplace"
  say "stage build (cap ${c}s): $cmd"
  TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=$jobs timeout --kill-after=10 "$c" $PY setup.py build_ext --inplace \
    >"$OUT/build.log" 2>&1
  rc=$?
  secs=$((SECONDS - t0))
  [ $rc -ne 0 ] && { say "build FAILED (rc $rc); tail of build.log:"; tail -n 30 "$OUT/build.log"; }
  TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=$jobs stages env --out "$OUT" --device "$DEV" --build-seconds "$secs" \
    --build-rc "$rc" --build-log build.log --build-command "$cmd"
  status=$([ $rc -eq 0 ] && echo ok || { [ $rc -eq 124 ] && echo timeout || echo failed; })
  record build "$status" "$rc" "$secs" "$c" "TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$jobs" env.json build.log
fi

# ---------------------------------------------------------------- 2. GPU tests, in parts
# ddsa_bench/gpu/stages.py TEST_PARTS: every GPU test file, then the op files' other tests (Triton
# compiled on the GPU), then the >2³¹-element test alone, each part under its own cap (SIGINT at
# the cap keeps its junit), so one slow part cannot hide the others' results.
OP_TESTS=(tests/test_gpu_op.py tests/test_extension_cuda.py tests/test_triton.py tests/test_op.py
          tests/test_extension_cpu.py)
c=$(cap 340)
note=$([ "$DRY" = 1 ] && echo "DRY_RUN: CUDA hidden; GPU tests collected and skipped, op files' CPU tests not run" || true)
run_stage gpu_tests "$c" "$note" "tests_gpu.json tests_gpu.xml" -- \
  $PY -m ddsa_bench.gpu.stages tests --out "$OUT" --time-budget $((c > 20 ? c - 10 : c)) --cap-scale "$CAP_SCALE" \
    "${DRYFLAG[@]}"
$PY -c "import json,sys; [print(p['name'], p['status'], p.get('counts', '')) for p in json.load(open(sys.argv[1]))['parts']]" "$OUT/tests_gpu.json" 2>/dev/null

# ---------------------------------------------------------------- 3. compute-sanitizer
c=$(cap 70)
t0=$SECONDS
SAN=$(command -v compute-sanitizer || true)
[ -z "$SAN" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ] && SAN="$CUDA_HOME/bin/compute-sanitizer"
[ -z "$SAN" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SAN=/usr/local/cuda/bin/compute-sanitizer
mkdir -p "$OUT/sanitize"
if [ "$DRY" = 1 ] || [ -z "$SAN" ]; then
  why=$([ "$DRY" = 1 ] && echo "DRY_RUN: cases run on the CPU without compute-sanitizer" \
        || echo "compute-sanitizer not found: cases run without it")
  backends=$([ "$DRY" = 1 ] && echo cpu || $PY -c 'from ddsa_bench.gpu.stages import gpu_backends; import torch; print(" ".join(gpu_backends(torch.device("cuda"))))')
  dev=$([ "$DRY" = 1 ] && echo cpu || echo cuda)
  dt=$([ "$DRY" = 1 ] && echo float32 || echo float16,bfloat16,float32)
  ch=$([ "$DRY" = 1 ] && echo 48 || echo 48,96)
  run_stage sanitize "$c" "$why" "sanitize.json" -- \
    $PY -m ddsa_bench.gpu.sanitize_stage --out "$OUT" --device "$dev" --dtypes "$dt" --channels "$ch" --backends $backends
else
  backends=$($PY -c 'from ddsa_bench.gpu.stages import gpu_backends; import torch; print(" ".join(gpu_backends(torch.device("cuda"))))')
  run_stage sanitize "$c" "$SAN" "sanitize.json" -- \
    $PY -m ddsa_bench.gpu.sanitize_stage --out "$OUT" --device cuda --sanitizer "$SAN" --backends $backends \
      --per-run-cap $(( c / 4 > 15 ? c / 4 : 15 ))
fi

# ---------------------------------------------------------------- 4. op: kernel breakdown + benchmark
c=$(cap 110)
run_stage op_bench "$c" "" "kernels.json op.json report.md" -- \
  bash -c "$PY -m ddsa_bench.gpu.stages kernels --out '$OUT' --device $DEV ${DRYFLAG[*]}; rk=\$?; \
    $PY -m ddsa_bench.gpu.stages op --out '$OUT' --device $DEV ${DRYFLAG[*]} --time-budget $(( c * 2 / 3 - 20 > 20 ? c * 2 / 3 - 20 : 20 )); ro=\$?; \
    $PY -m ddsa_bench report --out '$OUT' >/dev/null; exit \$(( rk > ro ? rk : ro ))"

# ---------------------------------------------------------------- 5. training step
c=$(cap 60)
run_stage train "$c" "" "train.json" -- $PY -m ddsa_bench.gpu.stages train --out "$OUT" --device "$DEV" "${DRYFLAG[@]}"

# ---------------------------------------------------------------- 6. drop-in patch of the authors' networks
c=$(cap 45)
if [ "$DRY" = 1 ]; then
  PATCH_ARGS=(--device cpu --net tiny --families ddsa --dtypes float32 --infer-size 16 --train-size 16
              --train-batch 1 --rounds 1 --min-run-time 0.01 --threads 1)
else
  PATCH_ARGS=(--device cuda --dtypes bfloat16,float16 --rounds 3 --min-run-time 0.2)
fi
run_stage patch "$c" "" "patch.json patch.md" -- \
  $PY -m ddsa_bench patch --out "$OUT" --time-budget $(( c * 2 / 3 > 10 ? c * 2 / 3 : 10 )) "${PATCH_ARGS[@]}"

# ---------------------------------------------------------------- 7. the rest of the test suite
c=$(cap 600)
t0=$SECONDS
if [ "$DRY" = 1 ]; then
  book junit --xml "$OUT/none.xml" --out "$OUT/tests_rest.json" --rc 0
  record rest_tests skipped 0 0 "$c" "DRY_RUN: the CPU suite runs in CI, not in the rehearsal" tests_rest.json
elif [ $((DEADLINE_S - SECONDS)) -lt 30 ]; then
  book junit --xml "$OUT/none.xml" --out "$OUT/tests_rest.json" --rc 0
  record rest_tests skipped 0 0 "$c" "no time left before the ${DEADLINE_S}s deadline" tests_rest.json
else
  ignore=$(for f in "${OP_TESTS[@]}" tests/test_gpu_run_script.py; do printf -- '--ignore=%s ' "$f"; done)
  xdist=""
  $PY -c 'import xdist' 2>/dev/null && xdist="-n 8"
  run_stage rest_tests "$c" "" "tests_rest.json tests_rest.xml" -- \
    bash -c "$PY -m pytest tests -q -m 'not gpu and not slow' $ignore $xdist -rfE -p no:cacheprovider \
      --junitxml='$OUT/tests_rest.xml' >'$OUT/tests_rest.log' 2>&1; rc=\$?; \
      $PY -m ddsa_bench.summary junit --xml '$OUT/tests_rest.xml' --out '$OUT/tests_rest.json' --rc \$rc; exit \$rc"
fi
book summary --out "$OUT"
say "done in ${SECONDS}s; summary: $OUT/summary.md"
sed -n '/^## Stages/,/^## [^S]/p' "$OUT/summary.md" | grep '^|' || true
