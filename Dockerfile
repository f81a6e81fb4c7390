# The s2gr image for prefect.yaml's container pools (s2gr-docker, s2gr-k8s): the locked environment
# only. The code comes with the project checkout mounted at /s2gr (with its data, outputs and DVC
# cache), so what runs is exactly what DVC hashed as the stages' code deps.
# Not built on the project's own machines (no container engine there): `docker build -t s2gr:latest .`
FROM python:3.11-slim

ENV DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 GX_ANALYTICS_ENABLED=false PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/s2gr
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*

# the CPU build of the pinned torch (PyPI's torch wheel is the multi-GB CUDA build); for GPU pools
# drop the extra index
COPY requirements.lock /tmp/requirements.lock
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements.lock
# dvc.yaml's commands call `s2gr`: the CLI of the mounted checkout
RUN printf '#!/bin/sh\nexec python -m s2gr.cli "$@"\n' > /usr/local/bin/s2gr && chmod +x /usr/local/bin/s2gr

WORKDIR /s2gr
