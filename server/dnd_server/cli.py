"""``dnd-server`` command: ``serve`` (default) and ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import structlog

from dnd_server.app import database_url, run_migrations, serve
from dnd_server.config import Config, ConfigError
from dnd_server.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dnd-server",
        description="dnd-service: the Do-Not-Disturb gRPC service. "
        "Configured by DND_* environment variables (see README).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate"],
        help="serve (default): run the gRPC server; migrate: apply database migrations and exit",
    )
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"dnd-server: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    log = structlog.get_logger("dnd_server.cli")
    if args.command == "migrate":
        url, _embedded = database_url(config)
        applied = asyncio.run(run_migrations(url, config.db_timeout_seconds))
        log.info("migrations_done", applied=applied)
        return 0
    if config.workers > 1:
        from dnd_server.supervisor import supervise

        return supervise(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
