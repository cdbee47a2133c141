#!/usr/bin/env bash
# Installs what is missing, builds, and trains the default config on
# Fashion-MNIST. Extra arguments go to `vae train` (for example
# --set train.epochs=2 or --device cuda). Leaves runs/fashion_mnist/ with
# checkpoint.safetensors, metrics.jsonl, config.ini and samples.png.
# Running it again trains afresh (--force: the earlier model in
# runs/fashion_mnist/ is replaced); `scripts/train.sh --resume` instead
# continues an interrupted run in that folder, with the config stored in its
# checkpoint (a --set may change only how long it goes on and how it is
# watched: `scripts/train.sh --resume --set train.epochs=60` trains a
# finished run on; other settings that differ are refused).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
vae_install_packages
# Only the program training runs (not the tests: scripts/test.sh builds those).
VAE_BUILD_TARGET=vae vae_build
out="$VAE_ROOT/runs/fashion_mnist"
start=(--force)
for argument in "$@"; do
  if [ "$argument" = "--resume" ] || [ "$argument" = "--force" ]; then start=(); fi
done
"$VAE_BUILD/vae" train --config "$VAE_ROOT/configs/fashion_mnist.ini" --out "$out" "${start[@]}" "$@"
"$VAE_BUILD/vae" eval --checkpoint "$out/checkpoint.safetensors" --split test | tee "$out/test_eval.json"
"$VAE_BUILD/vae" sample --checkpoint "$out/checkpoint.safetensors" --out "$out/samples.png" --n 64
