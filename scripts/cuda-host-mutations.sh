#!/usr/bin/env bash
# Plants known CUDA defects, one at a time, into a scratch copy of the tree
# and checks that the host execution target's tests (tests/cuda_host) fail
# on each (issue 23): a missing __syncthreads in kernels/reduce.cu, an
# off-by-one in a kernel's bounds check, and a kernel argument frozen into a
# CUDA graph at capture (the Adam step passed by value). A planted defect
# the tests pass is a hole in them: the script then exits non-zero.
#
# The working tree is never touched: its tracked and untracked (not ignored)
# files are copied to $MUTATIONS_DIR (default build-mutations/) and built
# there (release preset, the host-target test binaries only); each mutation
# is undone before the next. Measured on the 2-core machine: about 3 min for
# the first build, then 1-2 min per mutation.
#   scripts/cuda-host-mutations.sh              all mutations
#   MUTATIONS=reduce_barrier scripts/cuda-host-mutations.sh   one of them
set -euo pipefail
source "$(dirname "$0")/setup.sh"

MUTATIONS_DIR="${MUTATIONS_DIR:-$VAE_ROOT/build-mutations}"
SOURCE_COPY="$MUTATIONS_DIR/source"
BUILD="$MUTATIONS_DIR/build"
TARGETS=(test_cuda_host_kernels test_backend_ops_cuda_host test_cuda_training_cuda_host)

vae_install_packages
# A fresh copy each run: the working tree as it is now.
rm -rf "$SOURCE_COPY"
mkdir -p "$SOURCE_COPY"
(cd "$VAE_ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$SOURCE_COPY")

cmake -S "$SOURCE_COPY" --preset release -B "$BUILD" "$(vae_preset_options)" >/dev/null
build_targets() { cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}" >"$MUTATIONS_DIR/build.log" 2>&1; }

# Every host-target test binary as ctest runs it (the orders, the filters,
# one OpenMP thread); stops at the first that fails. Output in $1.
run_host_tests() {
  local log="$1"
  : >"$log"
  export OMP_NUM_THREADS=1 VAE_REQUIRE_OTHER_BACKENDS=1
  "$BUILD/test_cuda_host_kernels" >>"$log" 2>&1 || return 1
  local order
  for order in forward reversed; do
    VAE_CUDA_HOST_BLOCK_ORDER=$order VAE_CUDA_HOST_THREAD_ORDER=$order \
      "$BUILD/tests/cuda_host/test_backend_ops_cuda_host" \
      --gtest_filter='*OtherBackendsMatchCpu*:BackendOpsTable.*' >>"$log" 2>&1 || return 1
  done
  "$BUILD/tests/cuda_host/test_cuda_training_cuda_host" --gtest_filter='CudaTraining.*' >>"$log" 2>&1 || return 1
}

# plant FILE OLD NEW [OLD NEW ...]: each OLD must occur exactly once in FILE.
plant() {
  python3 - "$SOURCE_COPY/$1" "${@:2}" <<'PYTHON'
import sys
path, pairs = sys.argv[1], sys.argv[2:]
text = open(path).read()
for old, new in zip(pairs[0::2], pairs[1::2]):
    if text.count(old) != 1:
        sys.exit(f"cuda-host-mutations: {path}: expected one occurrence of {old!r}, found {text.count(old)}")
    text = text.replace(old, new)
open(path, "w").write(text)
PYTHON
}

restore() { cp "$VAE_ROOT/$1" "$SOURCE_COPY/$1"; }

reduce_barrier() {
  # The barrier between thread 0's write of last_block and every thread's read.
  plant kernels/reduce.cu "        last_block = vae_last_block_to_finish(&scratch->sum_of_squares_blocks_done);
    }
    __syncthreads();
    if (!last_block) return;" "        last_block = vae_last_block_to_finish(&scratch->sum_of_squares_blocks_done);
    }
    if (!last_block) return;"
}
reduce_barrier_file=kernels/reduce.cu

bounds_off_by_one() {
  # The bias addition's grid-stride loop (activation.cu) runs one element
  # past the end of y.
  plant kernels/activation.cu "threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        y[i] +=" "threadIdx.x; i <= count; i += (size_t)gridDim.x * blockDim.x)
        y[i] +="
}
bounds_off_by_one_file=kernels/activation.cu

frozen_graph_argument() {
  # The Adam step read on the host at launch and passed by value: right in
  # eager steps, frozen at its capture-time value in every graph replay.
  plant kernels/adam.cu \
    "vae_step_counter *counter, unsigned int *blocks_done) {" \
    "vae_step_counter *counter, unsigned int *blocks_done, uint64_t launch_step) {" \
    "vae_adam_constants(&settings, counter->step, norm_squared)" \
    "vae_adam_constants(&settings, launch_step, norm_squared)" \
    "counter, &scratch->adam_blocks_done);" \
    "counter, &scratch->adam_blocks_done, counter->step);"
}
frozen_graph_argument_file=kernels/adam.cu

ALL_MUTATIONS=(reduce_barrier bounds_off_by_one frozen_graph_argument)
read -r -a SELECTED <<<"${MUTATIONS:-${ALL_MUTATIONS[*]}}"

echo "cuda-host-mutations: building the host-target tests in $BUILD"
build_targets || { cat "$MUTATIONS_DIR/build.log"; echo "cuda-host-mutations: the unchanged tree does not build"; exit 1; }
if ! run_host_tests "$MUTATIONS_DIR/baseline.log"; then
  tail -50 "$MUTATIONS_DIR/baseline.log"
  echo "cuda-host-mutations: the unchanged tree fails its host-target tests ($MUTATIONS_DIR/baseline.log)"
  exit 1
fi
echo "cuda-host-mutations: the unchanged tree passes"

survived=0
for mutation in "${SELECTED[@]}"; do
  file_variable="${mutation}_file"
  file="${!file_variable:?unknown mutation $mutation}"
  "$mutation"
  log="$MUTATIONS_DIR/$mutation.log"
  if ! build_targets; then
    echo "cuda-host-mutations: $mutation: the planted tree does not build ($MUTATIONS_DIR/build.log)"
    restore "$file"
    exit 1
  fi
  if run_host_tests "$log"; then
    echo "cuda-host-mutations: $mutation ($file): SURVIVED: every host-target test passed ($log)"
    survived=$((survived + 1))
  else
    # A gtest failure, else what ended the binary (a sanitizer, a signal).
    failed="$(grep -oE '^\[  FAILED  \] +[0-9]+ tests?, listed below' "$log" | awk '{n += $4} END {print n + 0}')"
    first_failure="$(grep -m1 -E '^\[  FAILED  \] ' "$log" | sed 's/, where GetParam.*//' || true)"
    [ -n "$first_failure" ] || first_failure="$(grep -m1 -E 'Sanitizer|runtime error' "$log" || true)"
    echo "cuda-host-mutations: $mutation ($file): caught, $failed failing test(s), first: ${first_failure:-the binary ended, see $log}"
  fi
  restore "$file"
done
build_targets || true # leave the copy built as the tree is
[ "$survived" -eq 0 ] || { echo "cuda-host-mutations: $survived planted defect(s) not caught"; exit 1; }
echo "cuda-host-mutations: all ${#SELECTED[@]} planted defects caught"
