#!/usr/bin/env bash
# The installed package works for a program outside the tree:
#   check_package.sh BUILD_DIR WORK_DIR [EXTRA_FLAGS]
# installs BUILD_DIR into WORK_DIR/prefix, then builds tests/package/consumer.c
# twice, with find_package(vae CONFIG) + vae::vae and with
# `pkg-config --cflags --libs vae`, and runs both. EXTRA_FLAGS go to the
# consumer's compile and link (the sanitizer build's -fsanitize=...).
set -euo pipefail
build=$1
work=$2
extra_flags=${3:-}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

cmake --install "$build" --prefix "$prefix" >"$work/install.log"
for file in include/vae/vae.h include/vae/version.h include/vae/run_folder.h include/vae/output.h lib/libvae.a bin/vae; do
  [ -e "$prefix/$file" ] || { echo "check_package: $prefix/$file was not installed" >&2; exit 1; }
done
"$prefix/bin/vae" --help >/dev/null

# CMake: find_package(vae CONFIG REQUIRED), vae::vae.
cmake -S "$here" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="$extra_flags" -DCMAKE_EXE_LINKER_FLAGS="$extra_flags" \
  >"$work/cmake-configure.log" 2>&1 || { cat "$work/cmake-configure.log" >&2; exit 1; }
cmake --build "$work/cmake-build" >"$work/cmake-build.log" 2>&1 || { cat "$work/cmake-build.log" >&2; exit 1; }
mkdir -p "$work/data-cmake"
"$work/cmake-build/consumer" "$work/data-cmake"

# pkg-config: the .pc file alone.
pc_folder=$(dirname "$(find "$prefix" -name vae.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pc_folder" pkg-config --cflags --libs vae)
echo "check_package: pkg-config --cflags --libs vae: $flags"
mkdir -p "$work/data-pkg-config"
# shellcheck disable=SC2086  # the flags are words
cc -std=c11 $extra_flags -o "$work/consumer-pkg-config" "$here/consumer.c" $flags
"$work/consumer-pkg-config" "$work/data-pkg-config"
echo "check_package: ok"
