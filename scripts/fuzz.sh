#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer into build-fuzz/, and runs each for FUZZ_SECONDS
# seconds (default 60). Each target fuzzes a working copy of its seed corpus
# inside build-fuzz/ (new inputs never land in the repository; the working
# corpus grows from run to run). Exits non-zero when any target finds a crash,
# leak, timeout or out-of-memory, and prints the reproducer's path.
#   scripts/fuzz.sh                 all targets
#   scripts/fuzz.sh fuzz_npy ...    only these
#   FUZZ_SECONDS=10 scripts/fuzz.sh
set -euo pipefail
source "$(dirname "$0")/setup.sh"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_BUILD="${FUZZ_BUILD:-$VAE_ROOT/build-fuzz}"
ALL_TARGETS=(fuzz_config fuzz_safetensors fuzz_idx fuzz_npy)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${ALL_TARGETS[@]}")

# clang and its runtime libraries (libFuzzer, ASan, UBSan), and LLVM's OpenMP
# runtime, which is what clang's -fopenmp links.
vae_install_packages clang libclang-rt-14-dev libomp-dev

cmake -S "$VAE_ROOT" --preset fuzz -B "$FUZZ_BUILD" "$(vae_preset_options)" >/dev/null
# Only the fuzz targets (and the library they need), not the CLI.
cmake --build "$FUZZ_BUILD" -j "$(nproc)" --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$VAE_ROOT/tests/sanitizer/lsan.supp:print_suppressions=0}"

failed=()
for target in "${targets[@]}"; do
  seeds="$VAE_ROOT/tests/fuzz/corpus/${target#fuzz_}"
  work="$FUZZ_BUILD/fuzz-work/$target"
  mkdir -p "$work/corpus" "$work/artifacts"
  # Findings from an earlier run were reported then; start this run clean.
  rm -f "$work/artifacts"/*
  cp "$seeds"/* "$work/corpus/"
  echo "fuzz: $target for ${FUZZ_SECONDS}s (corpus $work/corpus, log $work/fuzz.log)"
  status=0
  # A target's dictionary (tests/fuzz/NAME.dict), when it has one: the format's words.
  dictionary=()
  [ -f "$VAE_ROOT/tests/fuzz/${target#fuzz_}.dict" ] && dictionary=(-dict="$VAE_ROOT/tests/fuzz/${target#fuzz_}.dict")
  "$FUZZ_BUILD/fuzz/$target" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 "${dictionary[@]}" \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 "$work/corpus" >"$work/fuzz.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" "$work/fuzz.log" | sed 's/^/  /' || true
  reproducers=$(find "$work/artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
                                                  -o -name 'oom-*' \) | sort)
  if [ "$status" -ne 0 ] || [ -n "$reproducers" ]; then
    # The report: from the first sanitizer or libFuzzer error line on.
    first=$(grep -n -m1 -E "ERROR: |runtime error:|ALARM: |out-of-memory" "$work/fuzz.log" | cut -d: -f1 || true)
    echo "fuzz: $target FAILED (exit status $status); its report (full log: $work/fuzz.log):" >&2
    tail -n "+${first:-1}" "$work/fuzz.log" | head -n 50 | sed 's/^/  /' >&2
    while IFS= read -r reproducer; do
      [ -n "$reproducer" ] || continue
      echo "fuzz: reproducer: $reproducer" >&2
      echo "fuzz:   replay with: \"$FUZZ_BUILD/fuzz/$target\" \"$reproducer\"" >&2
    done <<<"$reproducers"
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: findings in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no findings in ${targets[*]} (${FUZZ_SECONDS}s each)"
