# syntax=docker/dockerfile:1
#
# dnd-service server image.
#
#   docker build -t dnd-service:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 \
#     -e DND_DATABASE_URL=postgresql://dnd:...@db:5432/dnd \
#     -e DND_TOKENS_FILE=/run/secrets/dnd-tokens.json \
#     -v "$PWD/tokens.json:/run/secrets/dnd-tokens.json:ro" \
#     dnd-service:0.1.0
#
# The image is for production: it needs DND_DATABASE_URL. The embedded PostgreSQL of
# development (`make run`, the `embedded` extra) is not installed, and a server listening off
# loopback, as this image does on 0.0.0.0, refuses to start without DND_DATABASE_URL.
# It also refuses to start unless DND_TOKENS_FILE is set (or DND_AUTH=disabled is passed on
# purpose, e.g. for a local try-out).
#
# Migrations run at start (DND_MIGRATE_ON_START=true, under an advisory lock, so replicas may
# start together). To run them as a separate release step instead, run the image with the
# `migrate` command (`docker run ... dnd-service:0.1.0 migrate`, or deploy/migrate/job.yaml)
# and start the servers with DND_MIGRATE_ON_START=false.
#
# Other commands: `healthcheck` (the HEALTHCHECK below; `healthcheck --service liveness`
# asks the liveness status instead), `hash-token` (reads a token on stdin).
#
# PYTHON_IMAGE: the base of both stages, a Debian bookworm with Python 3.11 as `python`
# (e.g. `--build-arg PYTHON_IMAGE=registry.example/python:3.11-slim-bookworm` for a mirror).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: install the project and its server dependencies into a virtualenv -------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/dnd

WORKDIR /src
# Only what the package build reads (see .dockerignore): metadata, generated stubs, sources.
COPY pyproject.toml README.md ./
COPY generated/ generated/
COPY server/ server/
COPY client/ client/
# The project itself (not a registry package), with the dependency ranges of pyproject.toml:
# the `server` and `tracing` extras only (no `embedded` development database, no `dev` tools;
# tracing stays off until OTEL_* variables or DND_TRACING turn it on).
# A regular (non-editable) install with byte-code compiled, so the runtime stage needs no
# source tree and a read-only root filesystem costs nothing at start.
RUN /opt/dnd/bin/pip install --no-cache-dir '.[server,tracing]'

# ---- runtime: the virtualenv on a clean slim base, as a non-root user ----------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="dnd-service" \
      org.opencontainers.image.description="Do-Not-Disturb (messaging consent) gRPC service" \
      org.opencontainers.image.version="0.1.0"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 dnd \
    && useradd --system --no-log-init --uid 10001 --gid dnd \
       --home-dir /var/lib/dnd --create-home --shell /usr/sbin/nologin dnd

COPY --from=build /opt/dnd /opt/dnd

ENV PATH=/opt/dnd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DND_GRPC_ADDR=0.0.0.0:50051 \
    DND_METRICS_ADDR=0.0.0.0:9090

WORKDIR /var/lib/dnd
USER 10001:10001

# 50051: gRPC (dnd.v1.DndService, grpc.health.v1.Health, reflection); 9090: Prometheus /metrics.
EXPOSE 50051 9090

# `dnd-server healthcheck` asks the local gRPC health service and exits 0 only on SERVING
# (readiness: the database answers and the change feed keeps up). The start period covers
# connecting to the database and migrating.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["dnd-server", "healthcheck"]

# SIGTERM: health turns NOT_SERVING, new calls are refused, in-flight ones get
# DND_SHUTDOWN_GRACE_SECONDS (10 s) to finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dnd-server"]
CMD ["serve"]
