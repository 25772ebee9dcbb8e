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
# Production needs DND_DATABASE_URL. Without it the server starts the embedded PostgreSQL of
# the `pgserver` wheel under DND_DATA_DIR inside the container: a development convenience whose
# data lives and dies with the container and which no second replica can share.
# The image listens on 0.0.0.0, so the server refuses to start unless DND_TOKENS_FILE is set
# (or DND_AUTH=disabled is passed on purpose, e.g. for a local try-out).
#
# Migrations run at start (DND_MIGRATE_ON_START=true, under an advisory lock, so replicas may
# start together). To run them as a separate release step instead, run the image with the
# `migrate` command (`docker run ... dnd-service:0.1.0 migrate`, or deploy/migrate/job.yaml)
# and start the servers with DND_MIGRATE_ON_START=false.
#
# Other commands: `healthcheck` (the HEALTHCHECK below), `hash-token` (reads a token on stdin).

# ---- build: install the project and its server dependencies into a virtualenv -------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/dnd

WORKDIR /src
# Only what the package build reads (see .dockerignore): metadata, generated stubs, sources.
COPY pyproject.toml README.md ./
COPY generated/ generated/
COPY server/ server/
COPY client/ client/
# The project itself (not a registry package), with the dependency ranges of pyproject.toml.
# A regular (non-editable) install with byte-code compiled, so the runtime stage needs no
# source tree and a read-only root filesystem costs nothing at start.
RUN /opt/dnd/bin/pip install --no-cache-dir '.[server]'

# ---- runtime: the virtualenv on a clean slim base, as a non-root user ----------------------
FROM python:3.11-slim AS runtime

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
    DND_METRICS_ADDR=0.0.0.0:9090 \
    DND_DATA_DIR=/var/lib/dnd/pgdata

WORKDIR /var/lib/dnd
USER 10001:10001

# 50051: gRPC (dnd.v1.DndService, grpc.health.v1.Health, reflection); 9090: Prometheus /metrics.
EXPOSE 50051 9090

# `dnd-server healthcheck` asks the local gRPC health service and exits 0 only on SERVING
# (the database answers). The start period covers connecting to the database and migrating.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["dnd-server", "healthcheck"]

# SIGTERM: health turns NOT_SERVING, new calls are refused, in-flight ones get
# DND_SHUTDOWN_GRACE_SECONDS (10 s) to finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dnd-server"]
CMD ["serve"]
