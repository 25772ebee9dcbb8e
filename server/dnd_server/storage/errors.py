"""Translation of driver errors into the service's own, in exactly one place (the Store's
``_run``), and which of them a retry may fix."""

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
    # A connection whose backend was terminated mid-operation can surface as this.
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)

# Errors meaning the connection used was lost: a read may simply be retried on another one.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
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
