#!/usr/bin/env bash
# Builds docker/Dockerfile's CPU image with buildah and runs it: no Docker
# engine and no container registry are needed (the base image is made here
# from Debian's mirror with mmdebstrap). Checks the image's configuration
# (ENTRYPOINT vae, a non-root user, the runs/ and data/ volumes), that it holds
# no compiler and no test, `vae --version`, and trains one epoch of
# Fashion-MNIST inside it (the host's dataset-fashion-mnist mounted at the
# configs' data.path, runs/ mounted from the host), then evaluates the
# checkpoint it wrote. Prints each phase's time and the image's size.
# Needs root (buildah --isolation chroot); scripts/test.sh runs it in CI.
#   VAE_DOCKER_DIR   where the base tarball (kept between runs), buildah's
#                    storage and the run folder go (default build-docker/)
#   VAE_DOCKER_KEEP=1  keep the built image (localhost/vae-engine:cpu)
set -euo pipefail
source "$(dirname "$0")/setup.sh"
vae_install_packages mmdebstrap buildah
if [ "$(id -u)" -ne 0 ]; then
  echo "docker-check: needs root (buildah with --isolation chroot); run it with sudo" >&2
  exit 1
fi

dir="${VAE_DOCKER_DIR:-$VAE_ROOT/build-docker}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
# A storage of its own inside the build tree: nothing of the machine's own
# containers is touched, and `rm -rf build-docker` removes it all.
buildah=(buildah --root "$dir/storage" --runroot "$dir/run" --storage-driver overlay)
base_tar="$dir/debian-bookworm-minbase.tar"
base_image=localhost/debian:bookworm
image=localhost/vae-engine:cpu
data=/usr/share/datasets/fashion-mnist # configs/fashion_mnist.ini's data.path
started=$SECONDS
phase_start=$SECONDS
phase() {
  echo "docker-check: $1 ($((SECONDS - phase_start)) s)"
  phase_start=$SECONDS
}
fail() {
  echo "docker-check: FAILED: $*" >&2
  exit 1
}

if [ ! -s "$base_tar" ]; then
  mmdebstrap --quiet --variant=minbase bookworm "$base_tar.partial"
  mv "$base_tar.partial" "$base_tar"
  phase "made the Debian bookworm minbase tarball $base_tar"
fi
if ! "${buildah[@]}" inspect --type image "$base_image" >/dev/null 2>&1; then
  container=$("${buildah[@]}" from scratch)
  "${buildah[@]}" add --quiet "$container" "$base_tar" /
  "${buildah[@]}" commit --quiet "$container" "$base_image" >/dev/null
  "${buildah[@]}" rm "$container" >/dev/null
  phase "imported the tarball as $base_image"
fi

# The build context is the repository; .dockerignore keeps build*/ (this
# folder included), runs/ and .git/ out of it.
"${buildah[@]}" bud --isolation chroot --quiet --build-arg BASE="$base_image" -f "$VAE_ROOT/docker/Dockerfile" \
  -t "$image" "$VAE_ROOT" >/dev/null
phase "built $image (docker/Dockerfile, BASE=$base_image)"

# The image's configuration, as docker run would use it.
config=$("${buildah[@]}" inspect --type image --format \
  '{{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.User}} {{range $v, $_ := .OCIv1.Config.Volumes}}{{$v}} {{end}}' \
  "$image")
echo "docker-check: entrypoint, user, volumes: $config"
[[ "$config" == '[vae] vae '* ]] || fail "expected ENTRYPOINT [\"vae\"] and USER vae, got: $config"
[[ "$config" == *"/opt/vae-engine/runs "* && "$config" == *"/opt/vae-engine/data "* ]] ||
  fail "expected the volumes /opt/vae-engine/runs and /opt/vae-engine/data, got: $config"

container=$("${buildah[@]}" from --quiet "$image")
cleanup() {
  "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
  if [ "${VAE_DOCKER_KEEP:-0}" != "1" ]; then "${buildah[@]}" rmi "$image" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
runs="$dir/runs"
rm -rf "$runs"
mkdir -p "$runs"
chown 10001:10001 "$runs" # the image's user vae
[ -r "$data/train-images-idx3-ubyte.gz" ] || fail "no Fashion-MNIST in $data (apt-get install dataset-fashion-mnist)"
in_image() {
  "${buildah[@]}" run --isolation chroot --volume "$data:$data:ro" --volume "$runs:/opt/vae-engine/runs" \
    "$container" -- "$@"
}

# The first line is the version; the second names the BLAS and its kernel.
version_lines=$(in_image vae --version)
version=$(head -n 1 <<<"$version_lines")
expected="vae $(sed -n 's/^project(vae_engine VERSION \([0-9.]*\).*/\1/p' "$VAE_ROOT/CMakeLists.txt")"
[ "$version" = "$expected" ] || fail "vae --version printed '$version', expected '$expected'"
user=$(in_image id -un)
[ "$user" = vae ] || fail "commands run as '$user', expected the image's user vae"
leftovers=$(in_image sh -c 'for tool in cc gcc c++ g++ cmake make nvcc ctest; do command -v $tool; done
  find /usr/local /opt -type f \( -name "test_*" -o -name "*.a" -o -name "*.h" \)
  dpkg-query -W -f "\${Package}\n" | grep -E -x ".*-dev|(gcc|g\+\+|cpp)(-[0-9]+)?|binutils|cmake|make"
  exit 0')
[ -z "$leftovers" ] || fail "the runtime image should hold no build tool, -dev package, test or header; found: $leftovers"
echo "docker-check: $(tail -n +2 <<<"$version_lines")"
phase "'$version' as user $user; no compiler, build tool, -dev package, test or header in the image"

# Training, the check of what it left and the evaluation in one container
# run: in separate `buildah run`s the runs volume was seen empty now and then
# (the image's VOLUME beside the --volume bind mount), though the host had
# the files. The evaluation's JSON is the only standard output.
evaluation=$(in_image sh -c 'vae train --config configs/fashion_mnist.ini --set train.epochs=1 --out runs/check --force >&2 &&
  { test -s runs/check/checkpoint.safetensors && test -s runs/check/metrics.jsonl ||
    { echo "docker-check: FAILED: the run in the image left no checkpoint or metrics in runs/check" >&2; exit 1; }; } &&
  vae eval --checkpoint runs/check/checkpoint.safetensors --split test') ||
  fail "training or evaluating one epoch in the image failed (its messages above)"
echo "docker-check: test split: $evaluation"
python3 -c '
import json, sys
record = json.loads(sys.argv[1])
elbo = record["elbo"]
# One epoch of the default model: about -262 nats; a broken run is far off or NaN.
if not (-300.0 < elbo < -230.0):
    sys.exit("docker-check: FAILED: test ELBO %r after one epoch, expected -300 < ELBO < -230" % elbo)
' "$evaluation"
phase "trained one epoch in the image and evaluated its checkpoint"

size=$("${buildah[@]}" images --format '{{.Size}}' "$image")
echo "docker-check: image $image: $size (uncompressed); base $base_image: $("${buildah[@]}" images --format '{{.Size}}' "$base_image")"
echo "docker-check: passed in $((SECONDS - started)) s"
