#!/usr/bin/env bash
# CPU cycles per training step of the engine, JAX (jit) and PyTorch on one
# pinned core, for a machine shared with other work, where wall-clock
# samples/s are noise: `perf stat -e cycles:u` counts only this process's
# user-mode cycles. Each program runs twice, with A and B timed steps; the
# difference divided by B - A cancels start-up, data loading and JAX's
# compilation. Lower is better; the ratios are other / engine.
#
#   bench/cycles_cpu.sh                 # both configs
#   CONFIGS="configs/fashion_mnist.ini" bench/cycles_cpu.sh
#
# Needs perf (linux-perf) with user-mode counters (perf stat -e cycles:u true).
# Environment as bench/compare_cpu.sh: CONFIGS, VAE, PYTHON, JAX_PYTHON; CPU
# (the core to pin, default 0), A (20) and B (220).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
configs=(${CONFIGS:-configs/pytorch_example.ini configs/fashion_mnist.ini})
python="${PYTHON:-/usr/bin/python3}"
jax_python="${JAX_PYTHON:-$root/bench/.venv/bin/python}"
vae="${VAE:-$root/build/vae}"
cpu="${CPU:-0}"
a="${A:-20}" b="${B:-220}"
if ! perf stat -x, -e cycles:u true >/dev/null 2>&1; then
  echo "cycles_cpu: perf stat -e cycles:u does not work here (apt-get install linux-perf; kernel.perf_event_paranoid)" >&2
  exit 1
fi
cycles() { # command...: user-mode cycles of one run pinned to $cpu
  OMP_NUM_THREADS=1 taskset -c "$cpu" perf stat -x, -e cycles:u "$@" 2>&1 >/dev/null | awk -F, '/cycles/ {print $1}'
}
per_step() { # name steps-flag command...: cycles per step (B runs minus A runs)
  local flag="$1"; shift
  local first second
  first=$(cycles "$@" "$flag" "$a") second=$(cycles "$@" "$flag" "$b")
  awk -v x="$first" -v y="$second" -v n=$((b - a)) 'BEGIN {if (x > 0 && y > x) printf "%.0f", (y - x) / n; else print 0}'
}
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {if (x > 0 && y > 0) printf "%.2f", x / y; else printf "-"}'; }
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), pinned to CPU $cpu; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %14s %14s %14s %9s %9s\n' config engine jax_jit torch jax/eng torch/eng
for config in "${configs[@]}"; do
  e=$(per_step --steps "$vae" bench --config "$config" --device cpu --warmup-steps 20)
  j=0 t=0
  if "$jax_python" -c "import jax" 2>/dev/null; then
    j=$(per_step --steps "$jax_python" bench/jax_vae.py --config "$config" --device cpu --threads 1 --warmup-steps 20)
  fi
  if "$python" -c "import torch" 2>/dev/null; then
    t=$(per_step --steps "$python" bench/pytorch_vae.py --config "$config" --device cpu --threads 1 --warmup-steps 20)
  fi
  printf '%-22s %14s %14s %14s %9s %9s\n' "$(basename "$config")" "$e" "$j" "$t" "$(ratio "$j" "$e")" "$(ratio "$t" "$e")"
done
echo "cycles per training step (user mode, 1 thread); engine $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
