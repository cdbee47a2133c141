#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU and no network: builds with
# CUDA into build-gpu, runs every test (GPU ones included), runs
# compute-sanitizer (memcheck, racecheck) over a short training run, trains
# Fashion-MNIST on the GPU, benchmarks the engine against PyTorch on the same
# GPU, and writes bench/results/gpu-check-<date>-<commit>.json.
#
#   scripts/gpu-check.sh                      # all stages
#   scripts/gpu-check.sh build test           # some stages, in this order
#
# Stages: build test sanitize train bench report. Each stage leaves its
# numbers in build-gpu/gpu-check/, so stages can run in separate calls (for
# machines with a per-command time limit) and `report` gathers them.
#
# Dependencies missing on the machine are taken from .carry/debs (made on a
# machine with network by scripts/gpu-carry.sh), unpacked into .carry/root.
# Environment: VAE_COMMIT (when there is no .git), OUT (a folder that also
# receives the report and logs), VAE_TRAIN_TIMEOUT (seconds, default 900).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-gpu"
STATE="$BUILD/gpu-check"
CARRY_ROOT="$ROOT/.carry/root"
export PATH="/usr/local/cuda/bin:$PATH"
cd "$ROOT" || exit 2
mkdir -p "$STATE"

log() { echo "gpu-check: $*" >&2; }
# record KEY VALUE: one number or string per file, read back by `report`.
record() { printf '%s' "$2" >"$STATE/$1"; }
recorded() { if [ -s "$STATE/$1" ]; then cat "$STATE/$1"; else printf '%s' "${2:-null}"; fi; }

# ---------------------------------------------------------------- carried dependencies
use_carried_packages() {
  compgen -G "$ROOT/.carry/debs/*.deb" >/dev/null || return 0
  if [ ! -e "$CARRY_ROOT/.unpacked" ]; then
    log "unpacking $(ls "$ROOT"/.carry/debs/*.deb | wc -l) carried packages into $CARRY_ROOT"
    mkdir -p "$CARRY_ROOT"
    for deb in "$ROOT"/.carry/debs/*.deb; do dpkg -x "$deb" "$CARRY_ROOT" || log "warning: dpkg -x $deb failed"; done
    # .pc files name /usr: point them into the carried tree.
    find "$CARRY_ROOT" -name '*.pc' -type f -exec sed -i -e "s#=/usr\\b#=$CARRY_ROOT/usr#g" \
      -e "s# -I/usr/# -I$CARRY_ROOT/usr/#g" -e "s# -L/usr/# -L$CARRY_ROOT/usr/#g" {} +
    # What Debian's alternatives would have linked for OpenBLAS.
    local arch=x86_64-linux-gnu blas="$CARRY_ROOT/usr/lib/x86_64-linux-gnu/openblas-pthread"
    mkdir -p "$CARRY_ROOT/usr/lib/$arch/pkgconfig"
    for header in cblas.h f77blas.h openblas_config.h; do
      [ -e "$CARRY_ROOT/usr/include/$arch/openblas-pthread/$header" ] &&
        ln -sf "openblas-pthread/$header" "$CARRY_ROOT/usr/include/$arch/$header"
    done
    [ -e "$blas/pkgconfig/openblas.pc" ] && ln -sf "$blas/pkgconfig/openblas.pc" "$CARRY_ROOT/usr/lib/$arch/pkgconfig/openblas.pc"
    for library in libopenblas.so libopenblas.so.0 libblas.so.3 liblapack.so.3; do
      [ -e "$blas/$library" ] && ln -sf "openblas-pthread/$library" "$CARRY_ROOT/usr/lib/$arch/$library"
    done
    touch "$CARRY_ROOT/.unpacked"
  fi
  export CMAKE_PREFIX_PATH="$CARRY_ROOT/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PKG_CONFIG_PATH="$CARRY_ROOT/usr/lib/x86_64-linux-gnu/pkgconfig:$CARRY_ROOT/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$CARRY_ROOT/usr/lib/x86_64-linux-gnu:$CARRY_ROOT/usr/lib/x86_64-linux-gnu/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CPATH="$CARRY_ROOT/usr/include${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$CARRY_ROOT/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}"
  # Tools only when the machine has none of its own.
  command -v cmake >/dev/null || export PATH="$PATH:$CARRY_ROOT/usr/bin"
  command -v pkg-config >/dev/null || export PATH="$PATH:$CARRY_ROOT/usr/bin"
}
use_carried_packages

# The data set: the Debian package's folder, or the carried copy.
DATA_OVERRIDES=()
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] &&
   [ -e "$CARRY_ROOT/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
  DATA_OVERRIDES=(--set "data.path=$CARRY_ROOT/usr/share/datasets/fashion-mnist")
fi

# ---------------------------------------------------------------- stages
stage_build() {
  log "configuring and building $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DVAE_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$STATE/configure.log" 2>&1 ||
    { log "configure failed (see $STATE/configure.log)"; tail -30 "$STATE/configure.log" >&2; record build failed; return 1; }
  cmake --build "$BUILD" -j "$(nproc)" >"$STATE/build.log" 2>&1 ||
    { log "build failed (see $STATE/build.log)"; tail -40 "$STATE/build.log" >&2; record build failed; return 1; }
  record build ok
}

stage_test() {
  log "running ctest"
  (cd "$BUILD" && ctest --output-on-failure --output-junit "$STATE/ctest.xml" >"$STATE/ctest.log" 2>&1)
  local status=$?
  tail -15 "$STATE/ctest.log" >&2
  local total failed skipped
  total=$(grep -o 'tests="[0-9]*"' "$STATE/ctest.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  failed=$(grep -o 'failures="[0-9]*"' "$STATE/ctest.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  skipped=$(grep -o 'skipped="[0-9]*"' "$STATE/ctest.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  if [ -z "$total" ]; then  # no JUnit file: read the summary line
    total=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$STATE/ctest.log" | tail -1)
    failed=$(sed -n 's/.*, \([0-9]*\) tests failed out of.*/\1/p' "$STATE/ctest.log" | tail -1)
    skipped=$(grep -c '(Skipped)' "$STATE/ctest.log")
  fi
  total=${total:-0}; failed=${failed:-0}; skipped=${skipped:-0}
  record tests_total "$total"
  record tests_failed "$failed"
  record tests_skipped "$skipped"
  record tests_passed "$((total - failed - skipped))"
  return $status
}

# sanitizer_errors TOOL: runs one compute-sanitizer tool over a one-epoch tiny run.
sanitizer_errors() {
  local tool=$1 out
  out=$(mktemp -d)
  compute-sanitizer --tool "$tool" --print-limit 20 "$BUILD/vae" train --config configs/tiny_test.ini --device cuda \
    --set train.epochs=1 "${DATA_OVERRIDES[@]}" --out "$out" --quiet >"$STATE/sanitizer-$tool.log" 2>&1
  local status=$?
  rm -rf "$out"
  local errors
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) error.*/\1/p' "$STATE/sanitizer-$tool.log" | tail -1)
  if [ -z "$errors" ]; then
    log "$tool: no summary (exit $status); see $STATE/sanitizer-$tool.log"
    tail -10 "$STATE/sanitizer-$tool.log" >&2
    errors=null
  else
    log "$tool: $errors errors (exit $status)"
  fi
  record "sanitizer_$tool" "$errors"
}

stage_sanitize() {
  if ! command -v compute-sanitizer >/dev/null; then log "compute-sanitizer not found"; return 1; fi
  sanitizer_errors memcheck
  sanitizer_errors racecheck
}

stage_train() {
  local out="$STATE/fashion_mnist_run" started finished
  rm -rf "$out"
  log "training configs/fashion_mnist.ini on the GPU"
  started=$(date +%s.%N)
  timeout "${VAE_TRAIN_TIMEOUT:-900}" "$BUILD/vae" train --config configs/fashion_mnist.ini --device cuda \
    "${DATA_OVERRIDES[@]}" --out "$out" >"$STATE/train.log" 2>&1
  local status=$?
  finished=$(date +%s.%N)
  tail -5 "$STATE/train.log" >&2
  record train_exit "$status"
  record train_seconds "$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.1f", b - a }')"
  # The last metrics line (JSON) as it is.
  if [ -s "$out/metrics.jsonl" ]; then tail -1 "$out/metrics.jsonl" >"$STATE/train_last_metrics"; fi
  return $status
}

samples_per_second() { grep -o '"samples_per_s": *[0-9.eE+-]*' "$1" | tail -1 | sed 's/.*: *//'; }

stage_bench() {
  log "benchmarking the engine"
  "$BUILD/vae" bench --config configs/pytorch_example.ini --device cuda "${DATA_OVERRIDES[@]}" >"$STATE/bench-engine.log" 2>&1 ||
    log "engine bench failed; see $STATE/bench-engine.log"
  record engine_samples_per_s "$(samples_per_second "$STATE/bench-engine.log")"
  log "benchmarking PyTorch"
  /usr/bin/env python3 bench/pytorch_vae.py --config configs/pytorch_example.ini --device cuda >"$STATE/bench-pytorch.log" 2>&1 ||
    log "PyTorch bench failed; see $STATE/bench-pytorch.log"
  record pytorch_samples_per_s "$(samples_per_second "$STATE/bench-pytorch.log")"
  tail -2 "$STATE/bench-engine.log" "$STATE/bench-pytorch.log" >&2
}

json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n')"; }

stage_report() {
  local commit date gpu driver file
  commit=${VAE_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
  date=$(date -u +%Y-%m-%d)
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
  driver=${gpu##*, }
  gpu=${gpu%, *}
  mkdir -p "$ROOT/bench/results"
  file="$ROOT/bench/results/gpu-check-$date-$commit.json"
  local metrics=null
  [ -s "$STATE/train_last_metrics" ] && metrics=$(cat "$STATE/train_last_metrics")
  {
    echo "{"
    echo "  \"device\": $(json_string "$gpu"),"
    echo "  \"driver\": $(json_string "$driver"),"
    echo "  \"commit\": $(json_string "$commit"),"
    echo "  \"date\": $(json_string "$date"),"
    echo "  \"build\": $(json_string "$(recorded build unknown)"),"
    echo "  \"tests\": {\"total\": $(recorded tests_total), \"passed\": $(recorded tests_passed), \"failed\": $(recorded tests_failed), \"skipped\": $(recorded tests_skipped)},"
    echo "  \"sanitizer_errors\": {\"memcheck\": $(recorded sanitizer_memcheck), \"racecheck\": $(recorded sanitizer_racecheck)},"
    echo "  \"fashion_mnist_train\": {\"exit_status\": $(recorded train_exit), \"seconds\": $(recorded train_seconds), \"last_metrics\": $metrics},"
    echo "  \"samples_per_s\": {\"vae_engine\": $(recorded engine_samples_per_s), \"pytorch\": $(recorded pytorch_samples_per_s)},"
    echo "  \"benchmark_config\": \"configs/pytorch_example.ini\""
    echo "}"
  } >"$file"
  log "wrote $file"
  cat "$file"
  if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp "$file" "$OUT/" && cp "$STATE"/*.log "$OUT/" 2>/dev/null
  fi
}

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test sanitize train bench report)
overall=0
for stage in "${stages[@]}"; do
  case "$stage" in
    build) stage_build || { overall=1; [ ${#stages[@]} -gt 1 ] && { stage_report; exit 1; }; } ;;
    test|sanitize|train|bench|report) "stage_$stage" || overall=1 ;;
    *) log "unknown stage '$stage' (build test sanitize train bench report)"; exit 2 ;;
  esac
done
exit $overall
