#!/usr/bin/env bash
# Build both images (`make images`): the python target as PYTHON_IMAGE, the cpp target as
# CPP_IMAGE, with docker when a docker engine answers, else podman.
#
#   docker/build-images.sh
#
# Environment:
#   ENGINE        docker or podman (default: docker if `docker info` answers, else podman)
#   BASE_IMAGE    Debian bookworm base (default debian:bookworm-slim; when it can be neither
#                 found nor pulled, a local one is made with docker/local-base.sh)
#   PYTHON_IMAGE  parallel-recon        CPP_IMAGE  parallel-recon-cpp
#   PYTHON        the Python that makes the wheels (default .venv/bin/python)
#
# With podman, build/images/containers.conf holds the settings this host needs (runc as the
# runtime where it is installed, resource limits no higher than the host's hard limits);
# the build uses it through CONTAINERS_CONF, and so can `podman run`:
#   export CONTAINERS_CONF=$PWD/build/images/containers.conf
# Layers are cached by the engine: a second build with unchanged sources builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

python_image="${PYTHON_IMAGE:-parallel-recon}"
cpp_image="${CPP_IMAGE:-parallel-recon-cpp}"
default_base=debian:bookworm-slim
local_base=localhost/debian-base:bookworm

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null; then
    engine=podman
  else
    echo "images: no container engine: install docker, or podman (make deps installs it)" >&2
    exit 1
  fi
fi

if ! command -v "$engine" >/dev/null; then
  echo "images: container engine '$engine' not found (ENGINE is docker or podman)" >&2
  exit 1
fi

if [ "$engine" = podman ]; then
  # this host's limits: podman's defaults ask for more open files and processes than the
  # hard limits allow, and crun refuses some cgroup setups that runc handles
  conf=build/images/containers.conf
  mkdir -p "$(dirname "$conf")"
  nofile="$(ulimit -Hn)"
  nproc="$(ulimit -Hu)"
  pid_max="$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo "$nproc")"
  if [ "$nproc" = unlimited ] || { [ "$pid_max" != unlimited ] && [ "$pid_max" -lt "$nproc" ]; }; then
    nproc="$pid_max"
  fi
  {
    echo "# written by docker/build-images.sh for this host"
    echo "[containers]"
    echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    if command -v runc >/dev/null; then
      printf '\n[engine]\nruntime = "runc"\n'
    fi
  } >"$conf.new"
  mv "$conf.new" "$conf"
  CONTAINERS_CONF="$PWD/$conf"
  export CONTAINERS_CONF
fi

# -- the base image: given, found, pulled, or made here (while the wheels are made)
base="${BASE_IMAGE:-$default_base}"
base_job=""
if ! "$engine" image inspect "$base" >/dev/null 2>&1 \
  && ! "$engine" pull --quiet "$base" >/dev/null 2>&1; then
  if [ -n "${BASE_IMAGE:-}" ]; then
    echo "images: base image $base can be neither found nor pulled" >&2
    exit 1
  fi
  echo "images: no registry answers for $base; using a local Debian base ($local_base)" >&2
  base="$local_base"
  if ! "$engine" image inspect "$base" >/dev/null 2>&1; then
    docker/local-base.sh "$engine" "$base" &
    base_job=$!
  fi
fi

if ! docker/wheelhouse.sh build/wheelhouse; then
  if [ -n "$base_job" ]; then wait "$base_job" || true; fi
  exit 1
fi
if [ -n "$base_job" ] && ! wait "$base_job"; then
  echo "images: making the local base $base failed" >&2
  exit 1
fi

# -- both targets at once: one mostly waits on the mirror while the other computes
logs=build/images
mkdir -p "$logs"
declare -A tags=([python]="$python_image" [cpp]="$cpp_image") jobs=() before=()
for target in python cpp; do
  before[$target]="$("$engine" image inspect --format '{{.Id}}' "${tags[$target]}" 2>/dev/null || true)"
  echo "images: building ${tags[$target]} (target $target, base $base) with $engine;" \
    "log: $logs/$target.log" >&2
  "$engine" build --build-arg "BASE_IMAGE=$base" --target "$target" --tag "${tags[$target]}" . \
    >"$logs/$target.log" 2>&1 &
  jobs[$target]=$!
done
failed=0
for target in python cpp; do
  if ! wait "${jobs[$target]}"; then
    tail -n 30 "$logs/$target.log" >&2
    echo "images: building ${tags[$target]} failed (log: $logs/$target.log)" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
# the images these replace, unless a container still uses them
for target in python cpp; do
  now="$("$engine" image inspect --format '{{.Id}}' "${tags[$target]}")"
  if [ -n "${before[$target]}" ] && [ "${before[$target]}" != "$now" ]; then
    "$engine" rmi "${before[$target]}" >/dev/null 2>&1 || true
  fi
done
echo "images: $python_image and $cpp_image built with $engine" >&2
