#!/usr/bin/env bash
# Run on a machine WITH network (Debian bookworm, like the development image):
# downloads the .deb files that scripts/gpu-check.sh needs on a GPU machine
# that has no network and may lack the build's dependencies. They land in
# .carry/debs (git-ignored); carry that folder to the GPU machine, where
# gpu-check.sh unpacks them with dpkg -x into build-gpu/carry-root. The
# machine's image has CMake, ninja and the CUDA toolkit (device/KINDS.md), so
# they are not carried: the transfer limit is 64 MiB with the working tree.
#
#   scripts/gpu-carry.sh              # everything, the Fashion-MNIST data set included
#   scripts/gpu-carry.sh --no-dataset # without dataset-fashion-mnist (about 30 MB less)
set -euo pipefail

VAE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEBS="$VAE_ROOT/.carry/debs"

PACKAGES=(
  # GoogleTest (static libraries and CMake config)
  libgtest-dev
  # OpenBLAS (the OpenMP flavour the build prefers, CMakeLists.txt), its Fortran and OpenMP runtimes
  libopenblas-dev libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0 libgomp1
  # config, metrics, images
  libinih-dev libinih1 libcjson-dev libcjson1 libpng-dev libpng16-16 zlib1g-dev
  # Open MPI for data-parallel training and its tests (runs relocated: scripts/carried_mpi.sh)
  openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev libpmix2 libhwloc15 libevent-core-2.1-7
  libevent-pthreads-2.1-7 libfabric1 libucx0 libibverbs1 ibverbs-providers librdmacm1 libpsm2-2
  libpsm-infinipath1 libnl-3-200 libnl-route-3-200 libnuma1 libmunge2
  # pkg-config, which finds OpenBLAS's OpenMP build (CMakeLists.txt)
  pkgconf pkgconf-bin libpkgconf3
)
if [ "${1:-}" != "--no-dataset" ]; then PACKAGES+=(dataset-fashion-mnist); fi

mkdir -p "$DEBS"
cd "$DEBS"
echo "gpu-carry: downloading ${#PACKAGES[@]} packages into $DEBS" >&2
for package in "${PACKAGES[@]}"; do
  if ! apt-get download -q "$package" >/dev/null; then
    echo "gpu-carry: error: apt-get download $package failed (run apt-get update first?)" >&2
    exit 1
  fi
done
total_kib=$(du -sk "$DEBS" | cut -f1)
echo "gpu-carry: $(ls "$DEBS"/*.deb | wc -l) files, $((total_kib / 1024)) MiB in .carry/debs" >&2
tree_kib=$(cd "$VAE_ROOT" && git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
echo "gpu-carry: with the working tree ($((tree_kib / 1024)) MiB), a call carries about $(((total_kib + tree_kib) / 1024)) MiB" >&2
if [ $((total_kib + tree_kib)) -gt $((60 * 1024)) ]; then
  echo "gpu-carry: warning: over 60 MiB with the working tree; the transfer limit is 64 MiB (--no-dataset saves 30)" >&2
fi
