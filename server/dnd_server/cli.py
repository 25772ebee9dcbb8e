"""``dnd-server`` command: ``serve`` (default), ``migrate``, ``rekey``, ``hash-token`` and
``healthcheck``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import structlog

from dnd_server.app import StartupError, database_url, serve
from dnd_server.auth import hash_token
from dnd_server.config import Config, ConfigError
from dnd_server.logs import configure_logging
from dnd_server.runtime import run_migrations, run_rekey
from dnd_server.storage.migrations import MigrationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dnd-server",
        description="dnd-service: the Do-Not-Disturb gRPC service. "
        "Configured by DND_* environment variables (see docs/configuration.md).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate", "rekey", "hash-token", "healthcheck"],
        help="serve (default): run the gRPC server; migrate: apply database migrations and "
        "exit; rekey: move addresses stored under an older spelling to their keys (after a "
        "rolling update to a version whose address keys changed; safe beside serving "
        "servers, and to run again); hash-token: print the SHA-256 of a token (read from "
        "stdin) for the tokens file; "
        "healthcheck: exit 0 when the local server reports SERVING",
    )
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help="healthcheck only: the health service to ask. '' (default) is readiness: "
        "SERVING while the database answers and the change feed keeps up; 'liveness' is "
        "SERVING while the process runs, whatever the database does",
    )
    args = parser.parse_args(argv)
    if args.command == "hash-token":
        token = sys.stdin.readline().strip()
        if not token:
            print("dnd-server: give the token on standard input", file=sys.stderr)
            return 2
        print(hash_token(token))
        return 0
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"dnd-server: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    log = structlog.get_logger("dnd_server.cli")
    if args.command == "healthcheck":
        return healthcheck(config, args.service)
    if args.command in ("migrate", "rekey"):
        try:
            url, _embedded = database_url(config)
        except StartupError as error:
            log.error("startup_refused", error=str(error))
            print(f"dnd-server: {error}", file=sys.stderr)
            return 2
        if args.command == "rekey":
            try:
                done = asyncio.run(run_rekey(url, config.db_timeout_seconds))
            except MigrationError as error:
                print(f"dnd-server: {error}", file=sys.stderr)
                return 2
            except (OSError, asyncpg.PostgresError) as error:
                print(f"dnd-server: the database failed: {error}", file=sys.stderr)
                return 1
            moved = sum(done.moved.values()) + sum(done.merged.values())
            print(
                f"moved {sum(done.moved.values())}, merged {sum(done.merged.values())}, "
                f"dropped (copied by migration 14) {done.dropped}, "
                f"left as they were (no address now) {done.refused}"
            )
            if moved:
                # The move is no change of the log: servers that cached a moved address's
                # suppressions (or none) keep them until they start again.
                print("restart the servers (a rolling restart) so their caches read them")
            return 0
        applied = asyncio.run(run_migrations(url, config.db_timeout_seconds))
        log.info("migrations_done", applied=applied)
        return 0
    if config.workers > 1:
        from dnd_server.supervisor import supervise

        try:
            return supervise(config)
        except StartupError as error:
            log.error("startup_refused", error=str(error))
            print(f"dnd-server: {error}", file=sys.stderr)
            return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(serve(config), config.event_loop)
    except StartupError as error:
        log.error("startup_refused", error=str(error))
        print(f"dnd-server: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run_loop(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run ``main`` as ``asyncio.run`` does, on uvloop when asked and installed (a gRPC call
    and a database round trip cost the process markedly less CPU on it; see
    docs/scaling.md), else on the standard event loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            structlog.get_logger("dnd_server.cli").warning(
                "uvloop_missing", detail="DND_EVENT_LOOP=uvloop but uvloop is not installed"
            )
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def healthcheck(config: Config, service: str = "") -> int:
    """Container health probe: the gRPC health service of the local server says SERVING
    for ``service`` ("" readiness, "liveness" liveness)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = config.grpc_addr.rsplit(":", 1)[-1]
    target = f"127.0.0.1:{port}"
    if config.tls_cert_file:
        # Trust the server's own certificate. Under mutual TLS present the probe's client
        # certificate (DND_HEALTHCHECK_CERT_FILE / _KEY_FILE), else the server's own, which
        # then needs the clientAuth usage too.
        root = _read(config.tls_cert_file)
        chain = key = None
        if config.tls_client_ca_file:
            chain = _read(config.healthcheck_cert_file or config.tls_cert_file)
            key = _read(config.healthcheck_key_file or config.tls_key_file)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=root, private_key=key, certificate_chain=chain
        )
        channel = grpc.secure_channel(
            target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
        )
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=3
            )
        except grpc.RpcError as error:
            print(f"unhealthy: {error.code().name}", file=sys.stderr)
            return 1
    serving = answer.status == health_pb2.HealthCheckResponse.SERVING
    print("SERVING" if serving else "NOT_SERVING")
    return 0 if serving else 1


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
