#!/usr/bin/env bash
# The Python package's tests (ctest: Python.Package): `pip install` of the
# repository into a virtual environment in the build folder, then the
# unittest suite tests/python/test_*.py.
#   run_python_tests.sh SOURCE_DIR BUILD_DIR VAE_CLI [sanitize]
# The venv (BUILD_DIR/python-venv: Debian's numpy and cffi through
# --system-site-packages, scikit-build-core from PyPI) and the package's CMake
# build folder (BUILD_DIR/python-build) are kept between runs, so that a
# repeat run rebuilds only what changed. The package is built without the
# CUDA backend: the tests run on the CPU, and nvcc would add minutes.
# Exit 77 (ctest: skipped) under the sanitizers: the package's library is
# built by pip without them, and a Python interpreter cannot load an ASan
# library without LD_PRELOAD of the runtime; the sanitizer build runs the C
# tests of the same calls (test_arrays).
set -euo pipefail
source_dir="$1"
build_dir="$2"
vae_cli="$3"
if [ "${4:-}" = "sanitize" ]; then
  echo "Python.Package: SKIPPED under AddressSanitizer (the package's libvae.so is built by pip without it; test_arrays covers the C calls)"
  exit 77
fi
# Debian's interpreter, whose dist-packages hold python3-numpy and python3-cffi.
python="${VAE_TEST_PYTHON:-/usr/bin/python3}"
[ -x "$python" ] || python="$(command -v python3)"
venv="$build_dir/python-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import scikit_build_core, cffi, numpy" 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv --system-site-packages "$venv"
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "scikit-build-core>=0.9"; then
    rm -rf "$venv"
    echo "Python.Package: SKIPPED: scikit-build-core could not be installed from PyPI (no network?)"
    exit 77
  fi
  # Where the system has no cffi or numpy (not Debian's packages), PyPI's.
  "$venv/bin/python" -c "import cffi, numpy" 2>/dev/null ||
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check cffi numpy
fi
# No build isolation: the venv's scikit-build-core builds, and the build
# folder (incremental) outlives the install.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall --config-settings=build-dir="$build_dir/python-build" --config-settings=cmake.define.VAE_CUDA=OFF "$source_dir"
# From outside the source tree, so that `import vae` finds the installed package.
cd "$build_dir"
VAE_CLI="$vae_cli" "$venv/bin/python" -m unittest discover -s "$source_dir/tests/python" -p "test_*.py" -v
