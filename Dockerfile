# One image for every role of a triage deployment (docs/operations.md); the command picks it:
#   triage serve                    the whole node in one process (embedded defaults)
#   triage serve --role receiver    receive, hand-off, delivery (no models)
#   triage serve --role worker      triage the studies of the shared catalogue
#   triage db upgrade | triage doctor
#   triage web                      the web worklist alone (also served by serve on 8080)
#   triage users add NAME           an account of the web app (password from stdin)
#
#   docker build -t triage .
#   docker run -p 11112:11112 -p 8080:8080 -v triage-data:/data \
#     -e TRIAGE_PACS=ORTHANC@pacs.example:4242 triage
# CPU torch by default; for a GPU image, base it on a CUDA runtime image and install the
# matching torch==2.13.0 build instead of the CPU wheel below.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TRIAGE_HOME=/data \
    TRIAGE_HOST=0.0.0.0 \
    TRIAGE_PORT=11112 \
    TRIAGE_MODELS=/opt/triage/models

WORKDIR /opt/triage
# torch first and pinned, from the CPU wheel index, so no CUDA build is pulled in
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY triage ./triage
COPY flows ./flows
COPY models ./models
RUN pip install .

RUN useradd --system --home /data triage && mkdir -p /data && chown triage /data
USER triage
VOLUME ["/data"]
EXPOSE 11112 8080
CMD ["triage", "serve"]
