#!/usr/bin/env bash
# The engine's CPU backend beside PyTorch on the CPU, same model and batch,
# same machine, same run: alternates the two ROUNDS times and prints every
# JSON line, then the medians and their ratio.
#   bench/compare_cpu.sh [CONFIG] [THREADS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
config="${1:-$root/configs/pytorch_example.ini}"
threads="${2:-$(nproc)}"
rounds="${ROUNDS:-3}"
steps="${STEPS:-300}"
python="${PYTHON:-/usr/bin/python3}"
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
engine=() torch=()
for _ in $(seq "$rounds"); do
  line=$("$root/build/vae" bench --config "$config" --device cpu --steps "$steps" --warmup-steps 20)
  echo "$line"; engine+=("$(sed -E 's/.*"samples_per_s":([0-9.]+).*/\1/' <<<"$line")")
  line=$("$python" "$root/bench/pytorch_vae.py" --config "$config" --device cpu --threads "$threads" --steps "$steps")
  echo "$line"; torch+=("$(sed -E 's/.*"samples_per_s": ?([0-9.]+).*/\1/' <<<"$line")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
e=$(median "${engine[@]}"); t=$(median "${torch[@]}")
printf '{"config":"%s","threads":%s,"engine_samples_per_s":%s,"pytorch_samples_per_s":%s,"ratio":%.3f}\n' \
  "$(basename "$config")" "$threads" "$e" "$t" "$(awk -v a="$e" -v b="$t" 'BEGIN {print a / b}')"
