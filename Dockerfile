# Container images of the reconstruction, each a filter: `docker run -i IMAGE < raw > images`.
#
#   make images          # both targets, with docker or podman (see docker/build-images.sh)
#
# or by hand, once `make wheels` has put the Python wheels in build/wheelhouse:
#
#   docker build --target python -t parallel-recon .       # Python pipeline, every console script
#   docker build --target cpp -t parallel-recon-cpp .      # standalone C++ recon
#
# The python target installs wheels made on the host (`pip install --no-index`): the build
# needs no package index, and the image holds the versions the test suite ran with. It uses
# `RUN --mount` (BuildKit, the default builder of docker >= 23; podman/buildah). Both
# targets take their Debian packages from the base's mirror, without recommends, and run as
# the unprivileged user `recon`. BASE_IMAGE may be any Debian bookworm image: the default
# comes from a registry; `make images` makes a local one with debootstrap when no registry
# is reachable.

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- python: the pipeline
FROM ${BASE_IMAGE} AS python
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/recon --shell /usr/sbin/nologin recon \
 && install -d -o recon -g recon /data
# The wheels are mounted, not copied, so that no layer holds them; their checksum lists are
# copied, so that new wheels mean new layers (the build cache's key) and each install checks
# what it mounts. pip runs from its own wheel: the image holds no installer. Dependencies
# come first: their layer stays cached while only the project's sources change. Their own
# test suites (a fifth of the size, two fifths of the files) are not needed to run.
COPY build/wheelhouse/deps.sha256 /usr/local/share/parallel-recon/deps.sha256
RUN --mount=type=bind,source=build/wheelhouse,target=/wheels \
    cd /wheels && sha256sum --check --quiet /usr/local/share/parallel-recon/deps.sha256 \
 && python3 -m venv --without-pip /opt/venv \
 && set -- /wheels/tools/pip-*.whl \
 && /opt/venv/bin/python "$1/pip" install --no-index --no-cache-dir --disable-pip-version-check \
      --quiet /wheels/deps/*.whl \
 && find /opt/venv/lib -depth -type d -name tests -prune -exec rm -rf {} +
COPY build/wheelhouse/app.sha256 /usr/local/share/parallel-recon/app.sha256
RUN --mount=type=bind,source=build/wheelhouse,target=/wheels \
    cd /wheels && sha256sum --check --quiet /usr/local/share/parallel-recon/app.sha256 \
 && set -- /wheels/tools/pip-*.whl \
 && /opt/venv/bin/python "$1/pip" install --no-index --no-deps --no-cache-dir \
      --disable-pip-version-check --quiet /wheels/app/*.whl \
 && /opt/venv/bin/python "$1/pip" check --disable-pip-version-check
COPY docker/entrypoint-python.sh /usr/local/bin/entrypoint-python.sh
ENV PATH=/opt/venv/bin:$PATH
USER recon
WORKDIR /data
EXPOSE 9222
ENTRYPOINT ["/usr/local/bin/entrypoint-python.sh"]

# ------------------------------------------------------------- cpp-build: compile only
FROM ${BASE_IMAGE} AS cpp-build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ make libfftw3-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY workers/cpp /src/workers/cpp
RUN make -C /src/workers/cpp

# ----------------------------------------------------------------- cpp: the C++ recon
FROM ${BASE_IMAGE} AS cpp
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libfftw3-single3 socat \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/recon --shell /usr/sbin/nologin recon \
 && install -d -o recon -g recon /data
COPY --from=cpp-build /src/workers/cpp/build/mrd_stream_recon_cpp /usr/local/bin/
COPY docker/entrypoint-cpp.sh /usr/local/bin/entrypoint-cpp.sh
USER recon
WORKDIR /data
EXPOSE 9222
ENTRYPOINT ["/usr/local/bin/entrypoint-cpp.sh"]
