# deepsolar worker image: the project installed, a Prefect process worker as the default command.
#
#   docker build -t deepsolar:cpu .                          # CPU torch wheels (smaller image)
#   docker build -t deepsolar:cuda --build-arg VARIANT=cuda . # CUDA 12 torch wheels from PyPI
#   docker run --rm -e PREFECT_API_URL=http://prefect:4200/api deepsolar:cpu
#   docker run --rm --gpus all -e PREFECT_API_URL=... deepsolar:cuda
#
# The CUDA variant needs only the host's NVIDIA driver + container toolkit: the PyPI torch wheels
# carry their CUDA runtime libraries, so no nvidia/cuda base image is needed. Untested here: these
# machines have no Docker engine; tests/orchestration/test_dockerfile_lint.py lints this file.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# cpu | cuda
ARG VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEEPSOLAR_POOL=deepsolar \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /opt/deepsolar

# Dependencies first (cached while only the code changes): torch for the variant, then the rest.
COPY pyproject.toml README.md ./
RUN case "${VARIANT}" in \
      cpu)  pip install --no-cache-dir --index-url "${TORCH_CPU_INDEX}" "torch>=2.14" "torchvision>=0.29" ;; \
      cuda) pip install --no-cache-dir "torch>=2.14" "torchvision>=0.29" ;; \
      *)    echo "VARIANT must be cpu or cuda, got '${VARIANT}'" >&2 && exit 1 ;; \
    esac

COPY deepsolar ./deepsolar
COPY flows ./flows
COPY configs ./configs
COPY prefect.yaml ./
# The shipped reference model (`--checkpoint builtin`, default of map-region / segment-tiles).
COPY data/models ./data/models
# Editable, so flows/ resolve to this folder (the demo finds configs/ next to them) for the CLI and
# the worker alike. The dask extra: shards can run on a Dask cluster (prefect-dask).
# DL3013: the project's own dependencies are pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -e ".[dask]" \
    && python -c "import deepsolar.cli, flows.map_region" \
    && useradd --create-home --uid 10001 deepsolar \
    && mkdir -p /opt/deepsolar/out \
    && chown deepsolar:deepsolar /opt/deepsolar/out

USER 10001
ENV PREFECT_HOME=/home/deepsolar/.prefect

# A Prefect worker on the process pool DEEPSOLAR_POOL; flows run from /opt/deepsolar, so deploy
# from that folder (prefect --no-prompt deploy --all, in this image) - see docs/orchestration.md.
CMD ["sh", "-c", "exec prefect worker start --pool \"$DEEPSOLAR_POOL\" --type process"]
