# The triage node: receiver, triage flows (Prefect, embedded API) and delivery in one process.
#   docker build -t triage .
#   docker run -p 11112:11112 -v triage-data:/data \
#     -e TRIAGE_PACS=ORTHANC@pacs.example:4242 -e TRIAGE_HOST=0.0.0.0 triage
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TRIAGE_HOME=/data \
    TRIAGE_HOST=0.0.0.0 \
    TRIAGE_PORT=11112 \
    TRIAGE_MODELS=/opt/triage/models

WORKDIR /opt/triage
# torch first and pinned, from the CPU wheel index, so no CUDA build is pulled in; for a GPU
# image, base on a CUDA runtime image and install the matching torch==2.13.0 build instead.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY triage ./triage
COPY flows ./flows
COPY models ./models
RUN pip install .

RUN useradd --system --home /data triage && mkdir -p /data && chown triage /data
USER triage
VOLUME ["/data"]
EXPOSE 11112
HEALTHCHECK CMD python -c "import socket; socket.create_connection(('127.0.0.1', 11112), 2)"
CMD ["triage", "serve"]
