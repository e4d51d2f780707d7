#!/usr/bin/env bash
# Entrypoint of the `cpp` image; also runs as is outside a container.
#
#   entrypoint-cpp.sh                 mrd_stream_recon_cpp: MRD stream on stdin -> images on stdout
#   entrypoint-cpp.sh serve [PORT]    one recon per TCP connection on 0.0.0.0:PORT (9222), via socat
#
# MRD_RECON_CPP names the binary when it is not on PATH as mrd_stream_recon_cpp.
set -euo pipefail

recon="${MRD_RECON_CPP:-mrd_stream_recon_cpp}"

case "${1:-}" in
  serve)
    port="${2:-9222}"
    exec socat -t30 "TCP4-LISTEN:${port},fork,reuseaddr" "EXEC:${recon}"
    ;;
  *)
    exec "$recon" "$@"
    ;;
esac
