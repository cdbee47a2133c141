#!/usr/bin/env bash
# How much faster `scripts/train.sh` trains the default config than the engine
# did when issue 8 was opened: `vae train --config configs/fashion_mnist.ini`
# as train.sh runs it (no tuning variables, OpenMP/OpenBLAS threads as the
# program chooses them, every core of the machine), timed on the wall clock,
# for the engine before (commit BEFORE, built here in a git worktree) and the
# engine now (build/vae), alternating ROUNDS times; prints each time, the
# medians and their ratio.
#
#   bench/train_before_after.sh
#   EPOCHS=5 ROUNDS=5 bench/train_before_after.sh
#
# Environment: BEFORE (01f8d6b: the last commit before the CPU-speed work,
# which linked Debian's default pthread OpenBLAS), BEFORE_VAE (a binary built
# from it, instead of building one in $root/build-before), VAE (build/vae),
# EPOCHS (3), ROUNDS (3). Both programs read the same config and data; a
# machine busy with other work measures that work, so run it on a quiet one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
before="${BEFORE:-01f8d6b}"
epochs="${EPOCHS:-3}"
rounds="${ROUNDS:-3}"
vae="${VAE:-$root/build/vae}"
say() { echo "train_before_after: $*" >&2; }

if [ ! -x "$vae" ]; then
  say "no engine at $vae: run scripts/setup.sh (or set VAE)"
  exit 1
fi
before_vae="${BEFORE_VAE:-}"
if [ -z "$before_vae" ]; then
  tree="$root/build-before/tree"
  before_vae="$root/build-before/build/vae"
  if [ ! -x "$before_vae" ]; then
    say "building $before into build-before/ (once)"
    mkdir -p "$root/build-before"
    [ -d "$tree" ] || git -C "$root" worktree add --detach "$tree" "$before" >&2
    cmake -S "$tree" -B "$root/build-before/build" -DCMAKE_BUILD_TYPE=Release -DVAE_CUDA=OFF \
      -DVAE_BUILD_TESTS=OFF >&2
    cmake --build "$root/build-before/build" --target vae -j"$(nproc)" >&2
  fi
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# Wall seconds of one training run (data loading included, as a user waits),
# into a fresh folder (the engine before had no --force).
time_training() {
  local binary="$1" start end
  rm -rf "$out/run"
  start=$(date +%s.%N)
  "$binary" train --config "$root/configs/fashion_mnist.ini" --out "$out/run" \
    --set train.epochs="$epochs" --set output.image_every_epochs=0 >"$out/log" 2>&1 ||
    { cat "$out/log" >&2; say "$binary failed"; exit 1; }
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f\n", b - a}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "before: $before ($(ldd "$before_vae" | grep -o 'openblas-[a-z]*' | head -1))"
echo "now:    $(git -C "$root" rev-parse --short HEAD) ($(ldd "$vae" | grep -o 'openblas-[a-z]*' | head -1))"
echo "vae train --config configs/fashion_mnist.ini, $epochs epochs of 60000 examples, wall seconds"
declare -a before_times now_times
for round in $(seq 1 "$rounds"); do
  b=$(time_training "$before_vae")
  n=$(time_training "$vae")
  before_times+=("$b")
  now_times+=("$n")
  printf 'round %d: before %.1f s, now %.1f s\n' "$round" "$b" "$n"
done
mb=$(median "${before_times[@]}")
mn=$(median "${now_times[@]}")
awk -v b="$mb" -v n="$mn" -v e="$epochs" 'BEGIN {
  printf "median: before %.1f s (%.0f samples/s), now %.1f s (%.0f samples/s), %.2fx faster\n",
         b, 60000 * e / b, n, 60000 * e / n, b / n }'
