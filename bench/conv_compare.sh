#!/usr/bin/env bash
# The engine's CPU convolutions (bench_conv_ops) beside PyTorch's F.conv2d /
# F.conv_transpose2d (bench/conv_torch.py), both on one pinned core (1 thread),
# run one after the other ROUNDS times, so that the two see the same machine.
#
#   bench/conv_compare.sh                 # build-nocuda/bench_conv_ops, 3 rounds
#   BENCH=build/bench_conv_ops ROUNDS=1 SECONDS_PER=2 bench/conv_compare.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="${BENCH:-$root/build-nocuda/bench_conv_ops}"
python="${PYTHON:-/usr/bin/python3}"
rounds="${ROUNDS:-3}"
seconds="${SECONDS_PER:-1}"
core="${CORE:-0}"
if [ ! -x "$bench" ]; then
  echo "conv_compare: $bench not built (cmake --build <build> --target bench_conv_ops)" >&2
  exit 2
fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
for round in $(seq 1 "$rounds"); do
  echo "== round $round of $rounds (core $core, 1 thread; load: $(cut -d' ' -f1-3 /proc/loadavg))"
  taskset -c "$core" "$bench" "$seconds"
  taskset -c "$core" "$python" "$root/bench/conv_torch.py" --seconds "$seconds" --threads 1
done
