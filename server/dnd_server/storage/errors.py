"""Translation of driver errors into the service's own, in exactly one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg

from dnd_server.domain.errors import Unavailable

# Errors meaning "the database is not reachable or not answering right now": retryable.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)

# Errors a transaction may simply be retried after.
RETRYABLE_TRANSACTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise Unavailable(f"database unavailable: {type(exc).__name__}") from exc
