# deepsolar worker image (first version; the orchestration issue finishes it).
# CPU build by default; BASE=nvidia/cuda:... for GPU hosts (torch from PyPI ships CUDA libraries).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/deepsolar
COPY pyproject.toml README.md ./
COPY deepsolar ./deepsolar
COPY flows ./flows
COPY configs ./configs
RUN pip install .

RUN useradd --create-home deepsolar
USER deepsolar

# Start a Prefect worker on the process pool named by DEEPSOLAR_POOL (see README "Running with Prefect").
ENV DEEPSOLAR_POOL=deepsolar
CMD ["sh", "-c", "prefect worker start --pool \"$DEEPSOLAR_POOL\" --type process"]
