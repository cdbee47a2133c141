#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest).
# Tests that need a GPU report themselves as skipped where there is none.
# Then, unless VAE_TEST_QUICK=1, two more stages: the suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh, build-asan/)
# and every libFuzzer target for 60 s (scripts/fuzz.sh, build-fuzz/).
#   VAE_TEST_QUICK=1 scripts/test.sh    only the normal build and suite
set -euo pipefail
source "$(dirname "$0")/setup.sh"
# numpy, matplotlib and PyTorch let the interop and plot tests run (they skip without them).
vae_install_packages python3-numpy python3-matplotlib python3-torch
vae_build
(cd "$VAE_BUILD" && ctest --output-on-failure -j "$(nproc)" "$@")

if [ "${VAE_TEST_QUICK:-0}" != "1" ]; then
  echo "test: the suite under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh)"
  "$VAE_ROOT/scripts/sanitize.sh"
  echo "test: fuzzing each parser for 60 s (scripts/fuzz.sh)"
  FUZZ_SECONDS=60 "$VAE_ROOT/scripts/fuzz.sh"
fi
