#!/usr/bin/env bash
# Builds the library, CLI and tests with AddressSanitizer (+ LeakSanitizer)
# and UndefinedBehaviorSanitizer into build-asan/ (CPU only) and runs the whole
# ctest suite there. Any sanitizer report fails the test that triggered it.
# Extra arguments go to ctest (e.g. -R test_dataset).
set -euo pipefail
source "$(dirname "$0")/setup.sh"

SANITIZE_BUILD="${SANITIZE_BUILD:-$VAE_ROOT/build-asan}"

# The same options for the build (gtest_discover_tests runs every test binary
# to list its tests, under the sanitizers) and for ctest. Leaks are reported;
# the suppressions file covers third-party thread pools only. An allocation
# too large to satisfy returns NULL, as without ASan: the library reports it
# as out of memory (tests check that), where ASan would otherwise abort.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:strict_string_checks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$VAE_ROOT/tests/sanitizer/lsan.supp:print_suppressions=0}"

vae_install_packages
cmake -S "$VAE_ROOT" --preset asan -B "$SANITIZE_BUILD" "$(vae_preset_options)" >/dev/null
cmake --build "$SANITIZE_BUILD" -j "$(nproc)"
cd "$SANITIZE_BUILD"
ctest --output-on-failure -j "$(nproc)" "$@"
