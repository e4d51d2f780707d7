#!/usr/bin/env bash
# A minimal Debian base image made locally, for hosts that reach a Debian mirror but no
# container registry: debootstrap's minbase variant, trimmed as the slim images are (no
# documentation, manual pages, locales or package caches), imported into the engine.
#
#   docker/local-base.sh ENGINE IMAGE      e.g. docker/local-base.sh podman localhost/debian-base:bookworm
#
# Environment: DEBIAN_SUITE (bookworm); DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR, by
# default the ones this host's apt uses. Needs root (debootstrap).
set -euo pipefail

engine="${1:?usage: local-base.sh ENGINE IMAGE}"
image="${2:?usage: local-base.sh ENGINE IMAGE}"
suite="${DEBIAN_SUITE:-bookworm}"

# The first Debian archive URI of this host's apt sources matching $1 (a pattern on the
# URI's last path part), in one-line (sources.list) or deb822 (*.sources) form.
host_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null \
    | sed -n -E -e 's/^deb +(\[[^]]*\] +)?([a-z]+:[^ ]+).*/\2/p' -e 's/^URIs: *([^ ]+).*/\1/p' \
    | sed 's:/*$::' | grep -E "/$1\$" | head -n 1 || true
}

mirror="${DEBIAN_MIRROR:-$(host_mirror debian)}"
mirror="${mirror:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-$(host_mirror debian-security)}"
security="${security:-http://deb.debian.org/debian-security}"

if [ "$(id -u)" != 0 ]; then
  echo "local-base: debootstrap needs root; run as root, or build from a registry image" \
    "(BASE_IMAGE=...)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "local-base: debootstrap is not installed (make deps installs it)" >&2
  exit 1
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
echo "local-base: debootstrap --variant=minbase $suite from $mirror" >&2
if ! debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
  tail -n 20 "$rootfs.log" >&2
  echo "local-base: debootstrap failed (full log: $rootfs.log)" >&2
  exit 1
fi
rm -f "$rootfs.log"

# what later package installs leave out, as in the slim images
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-container-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
  -exec rm -rf {} +

cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF

if ! tar --numeric-owner -C "$rootfs" -c . | "$engine" import - "$image" >/dev/null 2>"$rootfs.log"
then
  cat "$rootfs.log" >&2
  echo "local-base: $engine import failed" >&2
  exit 1
fi
rm -f "$rootfs.log"
echo "local-base: imported $image" >&2
