#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest).
# Tests that need a GPU report themselves as skipped where there is none.
# Then, unless VAE_TEST_QUICK=1, three more stages: the suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh, build-asan/),
# every libFuzzer target for 60 s (scripts/fuzz.sh, build-fuzz/) and the CPU
# Docker image (scripts/docker-check.sh, build-docker/).
#   VAE_TEST_QUICK=1 scripts/test.sh    only the normal build and suite
set -euo pipefail
source "$(dirname "$0")/setup.sh"
# numpy, matplotlib and PyTorch let the interop and plot tests run (they skip without them);
# venv, cffi and numpy are what the Python package's test (Python.Package) installs it with.
vae_install_packages python3-numpy python3-matplotlib python3-torch python3-venv python3-cffi
vae_build
# The TensorBoard package, for the event file test (TensorBoard.EventFilesReadBack).
vae_tensorboard_venv
(cd "$VAE_BUILD" && ctest --output-on-failure -j "$(nproc)" "$@")

if [ "${VAE_TEST_QUICK:-0}" != "1" ]; then
  echo "test: the suite under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/sanitize.sh)"
  "$VAE_ROOT/scripts/sanitize.sh"
  echo "test: fuzzing each parser for 60 s (scripts/fuzz.sh)"
  FUZZ_SECONDS=60 "$VAE_ROOT/scripts/fuzz.sh"
  # The CPU Docker image, built with buildah and run (about a minute when
  # measured on the 2-core machine); where buildah cannot be had, say so.
  if command -v buildah >/dev/null || apt-cache show buildah >/dev/null 2>&1; then
    echo "test: the CPU Docker image (scripts/docker-check.sh)"
    "$VAE_ROOT/scripts/docker-check.sh"
  else
    echo "test: SKIPPED scripts/docker-check.sh: no buildah package on this machine"
  fi
fi
