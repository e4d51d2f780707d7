#!/usr/bin/env bash
# Wheels for the python image, made on the host so that the image build needs no package
# index (`pip install --no-index`) and holds the versions the test suite ran with.
#
#   docker/wheelhouse.sh [DEST]          DEST: build/wheelhouse (what the Dockerfile copies)
#
#   DEST/app/    the project's own wheel, built from a clean copy of the sources
#   DEST/deps/   its runtime dependencies, for the image's Python and platform, at the
#                versions installed in the host's environment (used as pip constraints)
#   DEST/tools/  pip's own wheel, which the image build runs without installing it, so that
#                the image holds no installer
#   DEST/deps.sha256, DEST/app.sha256   their checksums: the Dockerfile copies these and
#                mounts the wheels, so that new wheels give new layers
#
# Environment: PYTHON, a Python with pip and setuptools (default .venv/bin/python, which
# `make venv` creates); IMAGE_PYTHON_VERSION (3.11) and IMAGE_GLIBC (2.36), Debian
# bookworm's; IMAGE_ARCH (this machine's). The same sources give the same wheel bytes
# (SOURCE_DATE_EPOCH), and the dependencies are downloaded again only when their inputs
# change, so the image layers stay cached.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-build/wheelhouse}"
python="${PYTHON:-.venv/bin/python}"
py_version="${IMAGE_PYTHON_VERSION:-3.11}"
glibc="${IMAGE_GLIBC:-2.36}"
arch="${IMAGE_ARCH:-$(uname -m)}"
case "$arch" in
  arm64) arch=aarch64 ;;
  amd64) arch=x86_64 ;;
esac
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! pip_version="$("$python" -m pip --version 2>/dev/null | cut -d' ' -f2)"; then
  echo "wheelhouse: $python has no pip; run 'make venv' first or set PYTHON" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest/app" "$dest/deps" "$dest/tools"

# -- the project's wheel, from the files git knows (tracked, or new and not ignored), so
#    that no stale build/ folder or local data ends up in it; built again only when those
#    files or the build backend change
build_app() {  # $1: source tree
  rm -rf "$work/app"
  "$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/app" "$1"
  # keep an unchanged wheel's file as it is (same bytes, same time stamp: cached layers)
  for wheel in "$work"/app/*.whl; do
    if ! cmp -s "$wheel" "$dest/app/$(basename "$wheel")"; then
      rm -f "$dest"/app/*.whl
      cp "$wheel" "$dest/app/"
    fi
  done
}
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' path; do
        if [ -e "$path" ] || [ -L "$path" ]; then printf '%s\0' "$path"; fi
      done >"$work/files"
  tar --null -T "$work/files" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -cf "$work/src.tar"
  app_inputs="$(
    { sha256sum <"$work/src.tar"; "$python" -c 'import setuptools; print(setuptools.__version__)'; } \
      | sha256sum | cut -d' ' -f1
  )"
  if [ "$(cat "$dest/app.inputs" 2>/dev/null)" != "$app_inputs" ] \
    || ! compgen -G "$dest/app/*.whl" >/dev/null; then
    mkdir -p "$work/src"
    tar -xf "$work/src.tar" -C "$work/src"
    build_app "$work/src"
    echo "$app_inputs" >"$dest/app.inputs"
  fi
else
  build_app .
fi

# -- its runtime dependencies, for the image: CPython $py_version, manylinux up to glibc $glibc
platforms=(--platform "manylinux2014_$arch")
for minor in $(seq 17 "${glibc#*.}"); do
  platforms+=(--platform "manylinux_${glibc%%.*}_${minor}_$arch")
done
"$python" -m pip freeze --exclude-editable >"$work/constraints.txt"
abi="cp${py_version/./}"
fingerprint="$(
  {
    echo "python $py_version glibc $glibc arch $arch pip $pip_version"
    "$python" -c 'import sys, zipfile; w = zipfile.ZipFile(sys.argv[1]); print(*(
      w.read(n).decode() for n in w.namelist() if n.endswith(".dist-info/METADATA")))' \
      "$dest"/app/*.whl | grep '^Requires-Dist:' || true
    cat "$work/constraints.txt"
  } | sha256sum | cut -d' ' -f1
)"
if [ "$(cat "$dest/deps.inputs" 2>/dev/null)" != "$fingerprint" ]; then
  "$python" -m pip download --quiet --only-binary=:all: --dest "$work/deps" \
    --python-version "$py_version" --implementation cp \
    --abi "$abi" --abi abi3 --abi none "${platforms[@]}" \
    --constraint "$work/constraints.txt" "$dest"/app/*.whl
  rm -f "$work/deps/$(basename "$dest"/app/*.whl)"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/tools" \
    "pip==$pip_version"
  rm -rf "$dest/deps" "$dest/tools"
  mv "$work/deps" "$dest/deps"
  mv "$work/tools" "$dest/tools"
  echo "$fingerprint" >"$dest/deps.inputs"
fi
# what the Dockerfile copies: a change here is a change in the image's layers
(cd "$dest" && sha256sum deps/*.whl tools/*.whl) >"$dest/deps.sha256"
(cd "$dest" && sha256sum app/*.whl) >"$dest/app.sha256"
echo "wheelhouse: $(ls "$dest/app") and $(find "$dest/deps" -name '*.whl' | wc -l) dependency wheels in $dest"
