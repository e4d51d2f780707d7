# The only commands a newcomer needs: make demo, make test.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo
APT_PACKAGES := libfftw3-dev socat cmake g++ make libismrmrd-dev dcm2niix dicom3tools bart \
                podman buildah runc debootstrap

.PHONY: venv demo test lint bench cpp deps images wheels clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,lint,cluster]'
	touch $(STAMP)

## deps: Debian packages for the C++ recon, the socat tests, the C++ ISMRMRD consumer
## (libismrmrd-dev), the export checks (dcm2niix, dciodvfy) and the container images
## (podman, buildah, runc, debootstrap); needs root or sudo
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

## cpp: the standalone C++ recon (workers/cpp), warnings as errors
cpp: deps
	$(MAKE) -C workers/cpp

## images: the container images parallel-recon (python) and parallel-recon-cpp (cpp), with
## docker, else podman (a local Debian base when no registry answers); see docker/
images: venv
	PYTHON=$(BIN)/python docker/build-images.sh

## wheels: the python image's wheels in build/wheelhouse (for a hand-run `docker build`)
wheels: venv
	PYTHON=$(BIN)/python docker/wheelhouse.sh build/wheelhouse

## demo: phantom -> stream -> parallel recon -> HDF5 images -> PNG montage
demo: venv
	mkdir -p $(DEMO)
	$(BIN)/mrd_phantom -m 128 -c 8 -s 3 -r 2 --seed 1 -o $(DEMO)/raw.h5
	rm -f $(DEMO)/images.h5
	$(BIN)/mrdhdf5_to_stream $(DEMO)/raw.h5 | $(BIN)/mrd_stream_recon | $(BIN)/stream_to_mrdhdf5 $(DEMO)/images.h5
	$(BIN)/parallel-recon info $(DEMO)/images.h5
	$(BIN)/parallel-recon view $(DEMO)/images.h5 -o $(DEMO)/images.png
	@echo "wrote $(DEMO)/images.h5 and $(DEMO)/images.png"

## test: the whole test suite (this is what CI runs)
test: venv cpp
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check parallel_recon workers tests perf
	$(BIN)/mypy

## bench: throughput benchmarks against peers; writes perf/RESULTS.md (takes a while)
bench: venv cpp
	$(BIN)/python perf/run_all.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	-$(MAKE) -C workers/cpp clean
