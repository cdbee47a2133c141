#!/bin/sh
# ctest TensorBoard.EventFilesReadBack: runs check_event_files.py with the
# tensorboard package of BUILD/tensorboard-venv (scripts/setup.sh,
# vae_tensorboard_venv, makes it; scripts/test.sh calls that).
#   check_event_files.sh BUILD SOURCE
set -eu
build=$1
source_dir=$2
python="$build/tensorboard-venv/bin/python"
if ! "$python" -c "import tensorboard, PIL" 2>/dev/null; then
  echo "SKIPPED: no tensorboard package in $build/tensorboard-venv (scripts/test.sh makes it: vae_tensorboard_venv in scripts/setup.sh)"
  exit 77
fi
exec "$python" "$source_dir/tests/tensorboard/check_event_files.py" "$build/vae" "$source_dir" \
  "$build/test-tensorboard"
