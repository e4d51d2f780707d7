#!/usr/bin/env bash
# Entrypoint of the `python` image; also runs as is outside a container.
#
#   entrypoint-python.sh [recon options]   mrd_stream_recon: MRD stream on stdin -> images on stdout
#   entrypoint-python.sh serve [options]   TCP server on 0.0.0.0:9222 (later options win)
#   entrypoint-python.sh VERB [options]    any `parallel-recon` verb (phantom, info, send, ...)
set -euo pipefail

case "${1:-}" in
  serve)
    shift
    exec parallel-recon serve --host 0.0.0.0 --port 9222 "$@"
    ;;
  "" | -*)
    exec mrd_stream_recon "$@"
    ;;
  recon)
    shift
    exec mrd_stream_recon "$@"
    ;;
  *)
    exec parallel-recon "$@"
    ;;
esac
