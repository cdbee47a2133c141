#!/usr/bin/env bash
# Shared set-up for the README's commands: installs the Debian packages the
# build needs (when missing), configures (CMakePresets.json) and builds into
# build/.
# Sourced by scripts/train.sh and scripts/test.sh.
set -euo pipefail

VAE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAE_BUILD="${VAE_BUILD:-$VAE_ROOT/build}"
VAE_PACKAGES=(build-essential cmake pkg-config libopenblas-openmp-dev libinih-dev libcjson-dev libpng-dev zlib1g-dev
              libgtest-dev dataset-fashion-mnist openmpi-bin libopenmpi-dev)

vae_install_packages() {
  local missing=()
  for package in "${VAE_PACKAGES[@]}" "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$package")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Configure options every preset gets: VAE_WERROR=ON (CI, .ci/run) turns
# compiler warnings into errors.
vae_preset_options() {
  echo "-DVAE_WERROR=${VAE_WERROR:-OFF}"
}

# The "release" preset (CMakePresets.json) into $VAE_BUILD; VAE_BUILD_TARGET
# (e.g. vae) builds that target alone instead of everything (tests included).
vae_build() {
  cmake -S "$VAE_ROOT" --preset release -B "$VAE_BUILD" "$(vae_preset_options)" "$@" >/dev/null
  cmake --build "$VAE_BUILD" -j "$(nproc)" ${VAE_BUILD_TARGET:+--target "$VAE_BUILD_TARGET"}
}
