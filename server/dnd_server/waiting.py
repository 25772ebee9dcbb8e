"""Waiting with a time limit without swallowing cancellation.

Python 3.11's ``asyncio.wait_for`` can lose a cancellation that arrives as the awaited thing
completes (the task then runs on after being cancelled, and a shutdown waiting for it hangs).
``asyncio.timeout`` does not: these helpers use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` passes; True when it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def within(awaitable: Awaitable[_T], timeout: float) -> _T:
    """``awaitable``'s result, or TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await awaitable
