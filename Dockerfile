# syntax=docker/dockerfile:1
# The Exthub services image: one image, one process per container, chosen by the argument of `python -m`:
#   services.catalog | services.execution | services.agent   (the Helm chart sets it per Deployment)
# Build (from the repository root; see docs/deploy.md):
#   docker build -t <acr>.azurecr.io/exthub:<version> .
#
# Base image: the official Python image, pinned by tag AND digest (the multi-platform index digest, recorded
# 2026-08). Refresh both together, then rebuild and rerun the checks:
#   docker buildx imagetools inspect python:3.11-slim-bookworm     # prints the current index digest
# and put that tag's Python patch version and digest in BOTH `FROM` lines below.

# ---- build stage: a virtual environment with the runtime pins only (no dev packages) ----------------
FROM python:3.11.16-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# requirements-runtime.lock: the runtime closure of pyproject.toml, pinned as in requirements.lock
# (generated and checked by `python -m deploy.runtime_lock`). Wheels only: no compiler is needed or present.
COPY requirements-runtime.lock pyproject.toml ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --only-binary=:all: -r requirements-runtime.lock \
 && /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/pip check \
 && rm -f /opt/venv/bin/exthub \
 && /opt/venv/bin/pip uninstall --yes pip
# The services and the generated stubs they import; byte-compiled here, with the packages, because the root
# filesystem is read-only at run time. The services run with -OO (the ENTRYPOINT), which reads *.opt-2.pyc.
COPY services/ /app/services/
COPY gen/python/ /app/gen/python/
RUN rm -rf /app/services/echo \
 && /opt/venv/bin/python -m compileall -q -o 2 /app /opt/venv/lib/python3.11/site-packages

# ---- runtime stage: the interpreter, the venv and the code; non-root, nothing else --------------------
FROM python:3.11.16-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS runtime
LABEL org.opencontainers.image.title="exthub" \
      org.opencontainers.image.description="Exthub catalog, execution and agent services (python -m services.<name>)" \
      org.opencontainers.image.licenses="Proprietary"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXTHUB_DATA_DIR=/var/lib/exthub \
    EXTHUB_HOST=0.0.0.0
RUN python -m compileall -q -o 2 /usr/local/lib/python3.11 \
 && groupadd --system --gid 10001 exthub \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin exthub \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/exthub \
 && python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# catalog 50051 (HTTP 50055), execution 50052 (objects HTTP 50054), agent 50053 (HTTP 50056)
EXPOSE 50051 50052 50053 50054 50055 50056
# Kubernetes ignores HEALTHCHECK; the chart probes each service with native gRPC health checks.
# checkov:skip=CKV_DOCKER_2: Kubernetes does not run Docker HEALTHCHECKs; the chart has native gRPC probes on the health service
# -OO -X no_debug_ranges: services.platform.entrypoint.INTERPRETER_OPTIONS (docstrings and column tables left out).
ENTRYPOINT ["python", "-OO", "-X", "no_debug_ranges", "-m"]
CMD ["services.catalog"]
