#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (ctest).
# Tests that need a GPU report themselves as skipped where there is none.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
vae_install_packages
vae_build
cd "$VAE_BUILD"
ctest --output-on-failure -j "$(nproc)" "$@"
