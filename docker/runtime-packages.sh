#!/bin/sh
# runtime-packages.sh PROGRAM: the Debian/Ubuntu packages that hold the shared
# libraries PROGRAM loads (as ldd resolves them), one a line. The image's
# runtime stage installs exactly these, so it carries no -dev package and no
# compiler, and the list cannot drift from what the build linked.
# A library no package owns is an error: the runtime stage would lack it.
set -eu
program=$1
# With merged /usr a library may be packaged under /lib or /usr/lib while
# ldd names the other; a symlinked folder (/usr/local/cuda) hides the packaged path.
owner() {
  for candidate in "$1" "$(readlink -f "$1")"; do
    for path in "$candidate" "${candidate#/usr}" "/usr$candidate"; do
      if found=$(dpkg-query -S "$path" 2>/dev/null); then
        echo "$found" | head -n 1 | cut -d: -f1
        return 0
      fi
    done
  done
  return 1
}
libraries=$(ldd "$program" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
if ldd "$program" | grep -q "not found"; then
  echo "runtime-packages: $program: ldd finds no file for: $(ldd "$program" | grep "not found")" >&2
  exit 1
fi
packages=""
for library in $libraries; do
  if ! package=$(owner "$library"); then
    echo "runtime-packages: $library (needed by $program) belongs to no installed package" >&2
    exit 1
  fi
  packages="$packages$package
"
done
printf '%s' "$packages" | sort -u
