#!/usr/bin/env bash
# The engine's CPU backend beside JAX (jax.jit, XLA's CPU backend) and PyTorch
# (eager, Debian's build) on the same machine, in the same run: same model,
# batch and optimiser (Adam), at 1 pinned core and at 2 threads (2 pinned
# cores), for each config. The programs alternate ROUNDS times; each one's
# median is reported, and PyTorch's figure is the best of its default and of
# a tuned OPENBLAS_CORETYPE (the core the engine chose from the CPU's
# features). No tuning variable is set for the engine or JAX.
# The engine trains on binarised pixels (--set data.binarize=$BINARIZE,
# default dynamic) with the first layer's path it picks for this CPU (sums of
# the weights of the set pixels with AVX-512, src/backends/cpu_binary_linear.c;
# the dense GEMM otherwise), and a second time on the other path
# (VAE_CPU_BINARY_INPUTS=dense or sums): the columns engine and eng_dense or
# eng_sums. The peers' work does not depend on the pixel values. Where the
# engine's GEMMs are oneDNN's (src/backends/cpu_gemm.c), it runs a third time
# on OpenBLAS's (VAE_CPU_GEMM=openblas): the column eng_openblas.
#
#   bench/compare_cpu.sh                       # both configs, 1 and 2 threads
#   CONFIGS="configs/pytorch_example.ini" THREADS="1" ROUNDS=5 bench/compare_cpu.sh
#
# Environment: BINARIZE (dynamic; none for the raw intensities), CONFIGS (configs/pytorch_example.ini configs/fashion_mnist.ini),
# THREADS ("1 2"), ROUNDS (3), STEPS (300 timed steps after 20 warm-up steps),
# VAE (the engine binary; default build/vae, built by scripts/setup.sh when
# missing), PYTHON (/usr/bin/python3, with Debian's python3-torch), JAX_PYTHON
# (bench/.venv/bin/python, made here with `pip install jax[cpu]` when missing;
# JAX is skipped, with a note, where that fails). Every JSON line goes to
# $LOG (default bench/results/compare_cpu-<date>.jsonl).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
configs=(${CONFIGS:-configs/pytorch_example.ini configs/fashion_mnist.ini})
threads_list=(${THREADS:-1 2})
rounds="${ROUNDS:-3}"
steps="${STEPS:-300}"
warmup=20
python="${PYTHON:-/usr/bin/python3}"
jax_python="${JAX_PYTHON:-$root/bench/.venv/bin/python}"
vae="${VAE:-$root/build/vae}"
mkdir -p "$root/bench/results"
log="${LOG:-$root/bench/results/compare_cpu-$(date -u +%Y%m%dT%H%M%SZ).jsonl}"
: >"$log"
say() { echo "compare_cpu: $*" >&2; }

# ---- the programs ------------------------------------------------------------
if [ ! -x "$vae" ]; then
  say "building the engine into build/ (scripts/setup.sh)"
  # shellcheck source=../scripts/setup.sh
  source "$root/scripts/setup.sh"
  vae_install_packages
  vae_build >/dev/null
  vae="$VAE_BUILD/vae"
fi
have_jax=1
if ! "$jax_python" -c "import jax" 2>/dev/null; then
  if [ -z "${JAX_PYTHON:-}" ]; then
    say "making bench/.venv with jax[cpu] (once; the tests never need it)"
    if ! { python3 -m venv "$root/bench/.venv" && "$root/bench/.venv/bin/pip" install -q 'jax[cpu]'; } >&2; then
      have_jax=0
    fi
  else
    have_jax=0
  fi
fi
[ "$have_jax" = 1 ] || say "JAX unavailable: its column is left out (python3-venv and network to PyPI needed)"
have_torch=1
"$python" -c "import torch" 2>/dev/null || { have_torch=0; say "PyTorch unavailable ($python): apt-get install python3-torch"; }

# ---- the machine ---------------------------------------------------------------
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
features=$(grep -m1 -o -w -E 'avx512f|avx2|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')
probe=$(taskset -c 0 "$vae" bench --config "${configs[0]}" --device cpu --steps 1 --warmup-steps 1)
engine_blas=$(sed -E 's/.*"device":"cpu \((.*)\)".*/\1/' <<<"$probe")
# The first layer's other path: the one the engine did not pick here.
other_path=sums
grep -q "sums over the set inputs" <<<"$engine_blas" && other_path=dense
# With oneDNN's GEMMs the engine also runs on OpenBLAS's (eng_openblas).
other_gemm=0
grep -q "GEMMs: oneDNN" <<<"$engine_blas" && other_gemm=1
tuned_core=$(sed -nE 's/.*core ([A-Za-z0-9]+) \(chosen by CPU features\).*/\1/p' <<<"$engine_blas")
torch_core="-"
if [ "$have_torch" = 1 ]; then
  torch_core=$(OPENBLAS_VERBOSE=2 "$python" -c "import torch; torch.ones(64, 64) @ torch.ones(64, 64)" 2>&1 |
               sed -n 's/^Core: //p' | head -1)
fi
echo "CPU: $cpu_model ($(nproc) CPUs; ${features:-no avx2/avx512f/fma})"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "engine: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), BLAS: $engine_blas"
echo "PyTorch BLAS core by default: ${torch_core:-unknown}; tuned OPENBLAS_CORETYPE=${tuned_core:-none}"

# ---- the runs -------------------------------------------------------------------
value() { sed -nE 's/.*"samples_per_s": ?([0-9.]+).*/\1/p' <<<"$1"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
run_one() { # name cpus command...: appends the JSON line to the log, prints samples/s (0 on failure)
  local name="$1" cpus="$2"; shift 2
  local line
  if line=$(taskset -c "$cpus" "$@" 2>/dev/null | tail -1) && [ -n "$(value "$line")" ]; then
    echo "{\"program\":\"$name\",\"cpus\":\"$cpus\",\"result\":$line}" >>"$log"
    value "$line"
  else
    say "$name failed: $*"
    echo 0
  fi
}

binarize="${BINARIZE:-dynamic}"
printf '\n%-22s %7s %12s %12s %12s %12s %12s %12s %9s %9s %9s %9s\n' config threads engine "eng_$other_path" \
  eng_openblas jax_jit torch torch_tuned eng/jax eng/torch "eng/$other_path" eng/openblas
declare -A engine_at
for config in "${configs[@]}"; do
  for threads in "${threads_list[@]}"; do
    cpus=$(seq -s, 0 $((threads - 1)))
    e=() d=() g=() j=() t=() tt=()
    for _ in $(seq "$rounds"); do
      e+=("$(run_one engine "$cpus" "$vae" bench --config "$config" --set data.binarize="$binarize" --device cpu \
             --steps "$steps" --warmup-steps "$warmup")")
      d+=("$(VAE_CPU_BINARY_INPUTS=$other_path run_one "engine_$other_path" "$cpus" "$vae" bench --config "$config" \
             --set data.binarize="$binarize" --device cpu --steps "$steps" --warmup-steps "$warmup")")
      if [ "$other_gemm" = 1 ]; then
        g+=("$(VAE_CPU_GEMM=openblas run_one engine_openblas "$cpus" "$vae" bench --config "$config" \
               --set data.binarize="$binarize" --device cpu --steps "$steps" --warmup-steps "$warmup")")
      fi
      if [ "$have_jax" = 1 ]; then
        j+=("$(run_one jax "$cpus" "$jax_python" bench/jax_vae.py --config "$config" --device cpu --threads "$threads" \
               --steps "$steps" --warmup-steps "$warmup")")
      fi
      if [ "$have_torch" = 1 ]; then
        t+=("$(run_one torch "$cpus" "$python" bench/pytorch_vae.py --config "$config" --device cpu --threads "$threads" \
               --steps "$steps" --warmup-steps "$warmup")")
        if [ -n "$tuned_core" ]; then
          tt+=("$(OPENBLAS_CORETYPE="$tuned_core" run_one "torch_coretype_$tuned_core" "$cpus" "$python" bench/pytorch_vae.py \
                  --config "$config" --device cpu --threads "$threads" --steps "$steps" --warmup-steps "$warmup")")
        fi
      fi
    done
    em=$(median "${e[@]}"); dm=$(median "${d[@]}"); gm=$(median "${g[@]}"); jm=$(median "${j[@]}"); tm=$(median "${t[@]}"); ttm=$(median "${tt[@]}")
    best_torch=$(awk -v a="$tm" -v b="$ttm" 'BEGIN {print (a > b ? a : b)}')
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}'; }
    printf '%-22s %7s %12.0f %12.0f %12.0f %12.0f %12.0f %12.0f %9s %9s %9s %9s\n' "$(basename "$config")" "$threads" \
      "$em" "$dm" "$gm" "$jm" "$tm" "$ttm" "$(ratio "$em" "$jm")" "$(ratio "$em" "$best_torch")" "$(ratio "$em" "$dm")" \
      "$(ratio "$em" "$gm")"
    engine_at["$config:$threads"]="$em"
  done
done
echo
for config in "${configs[@]}"; do
  one="${engine_at[$config:1]:-}" two="${engine_at[$config:2]:-}"
  if [ -n "$one" ] && [ -n "$two" ]; then
    echo "engine scaling $(basename "$config"): 2 threads / 1 thread = $(awk -v a="$two" -v b="$one" 'BEGIN {if (b > 0) printf "%.2f", a / b; else printf "-"}')"
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "samples/s are medians of $rounds rounds of $steps timed steps; the engine on data.binarize=$binarize, eng_$other_path with VAE_CPU_BINARY_INPUTS=$other_path, eng_openblas with VAE_CPU_GEMM=openblas (0: not run, the engine's GEMMs are OpenBLAS's already); torch = eager PyTorch $("$python" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '-'), torch_tuned = with OPENBLAS_CORETYPE=${tuned_core:-none}; eng/torch uses the better of the two. JSON lines: $log"
