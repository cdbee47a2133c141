#!/usr/bin/env bash
# Data-parallel throughput on the CPU: `vae bench` as one process beside
# `mpirun -np N vae bench` (global samples/s: every rank's samples, timed by
# the slowest rank), same config and global batch, same machine, same run;
# one thread per process. Alternates ROUNDS times and prints every JSON
# line, then the medians and their ratio.
#   bench/compare_mpi_cpu.sh [CONFIG] [PROCESSES]     (VAE_BUILD: the build folder, default build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
config="${1:-$root/configs/bench_cpu.ini}"
processes="${2:-2}"
rounds="${ROUNDS:-3}"
steps="${STEPS:-200}"
vae="${VAE_BUILD:-$root/build}/vae"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
launcher=(mpirun --oversubscribe -np "$processes" -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1)
[ "$(id -u)" -eq 0 ] && launcher=(mpirun --allow-run-as-root "${launcher[@]:1}")
one=() many=()
for _ in $(seq "$rounds"); do
  line=$("$vae" bench --config "$config" --device cpu --steps "$steps" --warmup-steps 20)
  echo "$line"; one+=("$(sed -E 's/.*"samples_per_s":([0-9.]+).*/\1/' <<<"$line")")
  line=$("${launcher[@]}" "$vae" bench --config "$config" --device cpu --steps "$steps" --warmup-steps 20)
  echo "$line"; many+=("$(sed -E 's/.*"samples_per_s":([0-9.]+).*/\1/' <<<"$line")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
a=$(median "${one[@]}"); b=$(median "${many[@]}")
printf '{"config":"%s","processes":%s,"one_process_samples_per_s":%s,"mpi_samples_per_s":%s,"ratio":%.3f,"load_average":"%s"}\n' \
  "$(basename "$config")" "$processes" "$a" "$b" "$(awk -v a="$b" -v b="$a" 'BEGIN {print a / b}')" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
