# Container images of the reconstruction, each a filter: `docker run -i IMAGE < raw > images`.
#
#   docker build --target python -t parallel-recon .       # Python pipeline (mrd_stream_recon)
#   docker build --target cpp -t parallel-recon-cpp .      # standalone C++ recon
#
# Built from this repository and registry packages only (PyPI, Debian).

# ---------------------------------------------------------------- python: the pipeline
FROM python:3.11-slim AS python
WORKDIR /opt/parallel-recon
COPY pyproject.toml README.md ./
COPY parallel_recon ./parallel_recon
COPY workers ./workers
RUN pip install --no-cache-dir . \
 && rm -rf /opt/parallel-recon/workers/cpp
COPY docker/entrypoint-python.sh /usr/local/bin/entrypoint-python.sh
WORKDIR /data
EXPOSE 9222
ENTRYPOINT ["/usr/local/bin/entrypoint-python.sh"]

# ------------------------------------------------------------- cpp-build: compile only
FROM debian:bookworm-slim AS cpp-build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make libfftw3-dev \
 && rm -rf /var/lib/apt/lists/*
COPY workers/cpp /src/workers/cpp
RUN make -C /src/workers/cpp

# ----------------------------------------------------------------- cpp: the C++ recon
FROM debian:bookworm-slim AS cpp
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfftw3-single3 socat \
 && rm -rf /var/lib/apt/lists/*
COPY --from=cpp-build /src/workers/cpp/build/mrd_stream_recon_cpp /usr/local/bin/
COPY docker/entrypoint-cpp.sh /usr/local/bin/entrypoint-cpp.sh
WORKDIR /data
EXPOSE 9222
ENTRYPOINT ["/usr/local/bin/entrypoint-cpp.sh"]
