#!/usr/bin/env bash
# Shared set-up for the README's commands: installs the Debian packages the
# build needs (when missing), configures (CMakePresets.json) and builds into
# build/.
# Sourced by scripts/train.sh and scripts/test.sh.
set -euo pipefail

VAE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAE_BUILD="${VAE_BUILD:-$VAE_ROOT/build}"
VAE_PACKAGES=(build-essential cmake pkg-config libopenblas-openmp-dev libdnnl-dev libinih-dev libcjson-dev libpng-dev zlib1g-dev
              libprotobuf-c-dev protobuf-c-compiler libisal-dev
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

# The Python venv in which the ctest TensorBoard.EventFilesReadBack reads
# event files back: $VAE_BUILD/tensorboard-venv with tensorboard and pillow
# from PyPI (made once, then kept with the build folder).
vae_tensorboard_venv() {
  local venv="$VAE_BUILD/tensorboard-venv"
  if "$venv/bin/python" -c "import tensorboard, PIL" 2>/dev/null; then return 0; fi
  vae_install_packages python3-venv
  mkdir -p "$VAE_BUILD"
  echo "setup: making $venv (pip install tensorboard pillow)" >&2
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check tensorboard pillow
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
