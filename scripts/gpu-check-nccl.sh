#!/usr/bin/env bash
# The NCCL stage of the GPU check (scripts/gpu-check.sh runs it as the stage
# `nccl`; it also runs alone): on one GPU, `mpirun -np 1 vae train` takes the
# data-parallel path (NCCL communicator from an MPI_Bcast'ed unique id, the
# gradient all-reduce captured in the step's CUDA graph, the watchdog
# thread) and must end bitwise where a plain `vae train` ends (the mean over
# one rank changes nothing); then `vae bench` plain against `mpirun -np 1`
# measures what the captured all-reduce costs on one GPU.
#
#   scripts/gpu-check-nccl.sh [BUILD]     # BUILD defaults to build-gpu (made by gpu-check.sh's build stage)
#
# Writes BUILD/gpu-check/nccl.json and the key files nccl_status,
# nccl_plain_samples_per_s, nccl_mpi_samples_per_s; exits 0 when skipped
# (no mpirun, or a build without NCCL), 1 when a check fails.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build-gpu}"
STATE="$BUILD/gpu-check"
VAE="$BUILD/vae"
mkdir -p "$STATE"
log() { echo "gpu-check nccl: $*" >&2; }
record() { printf '%s' "$2" >"$STATE/$1"; }

# Open MPI carried in .carry/debs, unpacked by gpu-check.sh into $BUILD/carry-root, runs relocated.
CARRY_ROOT="$BUILD/carry-root"
source "$ROOT/scripts/carried_mpi.sh"
vae_use_carried_mpi "$CARRY_ROOT"
if ! command -v mpirun >/dev/null; then
  log "skipped: no mpirun (install openmpi-bin libopenmpi-dev, or carry them)"
  record nccl_status '"skipped: no mpirun"'
  exit 0
fi
if [ ! -x "$VAE" ] || ! ldd "$VAE" | grep -q libnccl; then
  log "skipped: $VAE is missing or was built without NCCL (configure with CUDA and MPI present)"
  record nccl_status '"skipped: build without NCCL"'
  exit 0
fi
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 1)
DATA=()
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] &&
   [ -e "$CARRY_ROOT/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
  DATA=(--set "data.path=$CARRY_ROOT/usr/share/datasets/fashion-mnist")
fi
TRAIN=(train --config "$ROOT/configs/tiny_test.ini" --device cuda "${DATA[@]}" --set train.epochs=3
       --set checkpoint.every_steps=20)
checksum() { grep -ao '"checksum":"crc32:[0-9a-f]*"' "$1/checkpoint.safetensors" | head -1; }
failed=0

# 1. Equivalence: a plain run and a launched world of one.
rm -rf "$STATE/nccl-plain" "$STATE/nccl-mpi"
"$VAE" "${TRAIN[@]}" --out "$STATE/nccl-plain" >"$STATE/nccl-plain.log" 2>&1 || { log "plain run failed"; failed=1; }
"${MPIRUN[@]}" "$VAE" "${TRAIN[@]}" --out "$STATE/nccl-mpi" >"$STATE/nccl-mpi.log" 2>&1 ||
  { log "mpirun -np 1 run failed (see $STATE/nccl-mpi.log)"; tail -20 "$STATE/nccl-mpi.log" >&2; failed=1; }
if ! grep -q "data parallel over MPI" "$STATE/nccl-mpi.log"; then
  log "the launched run did not take the data-parallel path"; failed=1
fi
plain_sum=$(checksum "$STATE/nccl-plain"); mpi_sum=$(checksum "$STATE/nccl-mpi")
if [ -z "$plain_sum" ] || [ "$plain_sum" != "$mpi_sum" ]; then
  log "checkpoints differ: plain $plain_sum, mpirun -np 1 $mpi_sum"; failed=1
else
  log "mpirun -np 1 (NCCL all-reduce in the graph) ends bitwise where the plain run ends ($plain_sum)"
fi

# 2. The all-reduce's cost on one GPU: alternating rounds, medians.
BENCH=(bench --config "$ROOT/configs/fashion_mnist.ini" --device cuda "${DATA[@]}" --warmup-steps 50 --steps 2000)
plain=(); launched=()
for round in 1 2 3; do
  p=$("$VAE" "${BENCH[@]}" 2>>"$STATE/nccl-bench.log" | grep -o '"samples_per_s":[0-9.]*' | cut -d: -f2)
  m=$("${MPIRUN[@]}" "$VAE" "${BENCH[@]}" 2>>"$STATE/nccl-bench.log" | grep -o '"samples_per_s":[0-9.]*' | cut -d: -f2)
  plain+=("${p:-0}"); launched+=("${m:-0}")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
plain_median=$(median "${plain[@]}"); mpi_median=$(median "${launched[@]}")
record nccl_plain_samples_per_s "$plain_median"
record nccl_mpi_samples_per_s "$mpi_median"
log "bench samples/s, medians of 3: plain $plain_median (${plain[*]}), mpirun -np 1 with NCCL $mpi_median (${launched[*]})"

status=$([ $failed -eq 0 ] && echo '"passed"' || echo '"failed"')
record nccl_status "$status"
cat >"$STATE/nccl.json" <<EOF
{"stage":"nccl","status":$status,"plain_checksum":"${plain_sum#*crc32:}","mpi_checksum":"${mpi_sum#*crc32:}",
 "bench_config":"configs/fashion_mnist.ini","plain_samples_per_s":[${plain[*]// /,}],
 "mpi_np1_samples_per_s":[${launched[*]// /,}],"plain_median":$plain_median,"mpi_np1_median":$mpi_median}
EOF
exit $failed
