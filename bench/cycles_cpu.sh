#!/usr/bin/env bash
# CPU cycles per training step of the engine, JAX (jit) and PyTorch on one
# pinned core, for a machine shared with other work, where wall-clock
# samples/s are noise: `perf stat -e cycles:u` counts only this process's
# user-mode cycles. Where the machine has no cycle counter (a VM without a
# virtual PMU), the process's CPU time (task-clock, microseconds) stands in:
# also blind to the time other processes hold the core, though not to what
# they do to its caches. Each program runs twice, with A and B timed steps;
# the difference divided by B - A cancels start-up, data loading and JAX's
# compilation. Lower is better; the ratios are other / engine.
# The engine trains on --set data.binarize=$BINARIZE (default dynamic) with
# the first layer's path it picks for this CPU, and once more on the other
# path (VAE_CPU_BINARY_INPUTS=dense or sums), and on OpenBLAS's GEMMs
# (VAE_CPU_GEMM=openblas) where its own are oneDNN's, as in compare_cpu.sh.
#
#   bench/cycles_cpu.sh                 # both configs
#   CONFIGS="configs/fashion_mnist.ini" bench/cycles_cpu.sh
#
# Needs perf (linux-perf): cycles:u, or task-clock where no counter exists.
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
binarize="${BINARIZE:-dynamic}"
event=cycles:u unit="cycles"
if ! perf stat -x, -e cycles:u true 2>&1 >/dev/null | grep -q '^[0-9]'; then
  if perf stat -x, -e task-clock:u true 2>&1 >/dev/null | grep -q '^[0-9]'; then
    event=task-clock:u unit="microseconds of CPU time"
    echo "cycles_cpu: no cycle counter here (perf stat -e cycles:u: not supported); counting CPU time (task-clock:u)" >&2
  else
    echo "cycles_cpu: perf stat works for neither cycles:u nor task-clock:u (apt-get install linux-perf; kernel.perf_event_paranoid)" >&2
    exit 1
  fi
fi
cycles() { # command...: user-mode cycles (or CPU microseconds) of one run pinned to $cpu
  OMP_NUM_THREADS=1 taskset -c "$cpu" perf stat -x, -e "$event" "$@" 2>&1 >/dev/null |
    awk -F, -v event="$event" '$3 == event {if (event == "cycles:u") print $1; else printf "%.0f", $1 * 1000}'
}
per_step() { # name steps-flag command...: cycles per step (B runs minus A runs)
  local flag="$1"; shift
  local first second
  first=$(cycles "$@" "$flag" "$a") second=$(cycles "$@" "$flag" "$b")
  awk -v x="$first" -v y="$second" -v n=$((b - a)) 'BEGIN {if (x > 0 && y > x) printf "%.0f", (y - x) / n; else print 0}'
}
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {if (x > 0 && y > 0) printf "%.2f", x / y; else printf "-"}'; }
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), pinned to CPU $cpu; load average $(cut -d' ' -f1-3 /proc/loadavg)"
other_path=sums
"$vae" bench --config "${configs[0]}" --device cpu --steps 1 --warmup-steps 1 | grep -q "sums over the set inputs" &&
  other_path=dense
other_gemm=0
"$vae" bench --config "${configs[0]}" --device cpu --steps 1 --warmup-steps 1 | grep -q "GEMMs: oneDNN" && other_gemm=1
printf '%-22s %14s %14s %14s %14s %14s %9s %9s %9s %9s\n' config engine "eng_$other_path" eng_openblas jax_jit torch \
  "$other_path/eng" openblas/eng jax/eng \
  torch/eng
for config in "${configs[@]}"; do
  e=$(per_step --steps "$vae" bench --config "$config" --device cpu --warmup-steps 20 --set "data.binarize=$binarize")
  d=$(VAE_CPU_BINARY_INPUTS=$other_path per_step --steps "$vae" bench --config "$config" --device cpu --warmup-steps 20 \
      --set "data.binarize=$binarize")
  g=0 j=0 t=0
  if [ "$other_gemm" = 1 ]; then
    g=$(VAE_CPU_GEMM=openblas per_step --steps "$vae" bench --config "$config" --device cpu --warmup-steps 20 \
        --set "data.binarize=$binarize")
  fi
  if "$jax_python" -c "import jax" 2>/dev/null; then
    j=$(per_step --steps "$jax_python" bench/jax_vae.py --config "$config" --device cpu --threads 1 --warmup-steps 20)
  fi
  if "$python" -c "import torch" 2>/dev/null; then
    t=$(per_step --steps "$python" bench/pytorch_vae.py --config "$config" --device cpu --threads 1 --warmup-steps 20)
  fi
  printf '%-22s %14s %14s %14s %14s %14s %9s %9s %9s %9s\n' "$(basename "$config")" "$e" "$d" "$g" "$j" "$t" \
    "$(ratio "$d" "$e")" "$(ratio "$g" "$e")" \
    "$(ratio "$j" "$e")" "$(ratio "$t" "$e")"
done
echo "$unit per training step (user mode, 1 thread; engine on data.binarize=$binarize);" \
  "engine $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
