"""The one list of client methods, shared by both clients.

Each method is a request builder of ``_requests.py`` bound to the client that reads it: on a
``DndClient`` the call blocks and returns the answer, on an ``AsyncDndClient`` it returns an
awaitable (or an async iterator for the watch). The clients themselves only say how to make
one call and how to follow one stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import grpc
from dnd.v1 import dnd_pb2 as pb

from dnd_client import _requests as rq
from dnd_client._requests import ExportPlan, Prepared, WatchPlan
from dnd_client._watch import Backoff, resumable
from dnd_client.errors import Unavailable, translate

_P = ParamSpec("_P")
_R = TypeVar("_R")

WatchItem = pb.ChangeEvent | pb.Bookmark


class Unary(Generic[_P, _R]):
    """A unary RPC as a method: blocking on DndClient, awaitable on AsyncDndClient."""

    def __init__(self, build: Callable[_P, Prepared[_R]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: Blocking, owner: type) -> Callable[_P, _R]: ...
    @overload
    def __get__(self, client: Asynchronous, owner: type) -> Callable[_P, Awaitable[_R]]: ...
    def __get__(self, client: object, owner: type) -> Any:
        if client is None:
            return self
        build = self.build
        unary = client._unary  # type: ignore[attr-defined]

        def call(*args: Any, **kwargs: Any) -> Any:
            return unary(build(*args, **kwargs))

        call.__doc__ = build.__doc__
        return call


class Stream(Generic[_P]):
    """A resumable server stream as a method: an iterator or an async iterator."""

    def __init__(self, build: Callable[_P, WatchPlan]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(self, client: Blocking, owner: type) -> Callable[_P, Iterator[WatchItem]]: ...
    @overload
    def __get__(
        self, client: Asynchronous, owner: type
    ) -> Callable[_P, AsyncIterator[WatchItem]]: ...
    def __get__(self, client: object, owner: type) -> Any:
        if client is None:
            return self
        build = self.build
        stream = client._stream  # type: ignore[attr-defined]

        def call(*args: Any, **kwargs: Any) -> Any:
            return stream(build(*args, **kwargs))

        call.__doc__ = build.__doc__
        return call


class ExportStream(Stream[_P]):
    """A restartable export as a method: an iterator (or async iterator) of its messages."""

    def __init__(self, build: Callable[_P, ExportPlan]) -> None:
        self.build = build  # type: ignore[assignment]
        self.__doc__ = build.__doc__

    @overload  # type: ignore[override]
    def __get__(self, client: None, owner: type) -> Self: ...
    @overload
    def __get__(
        self, client: Blocking, owner: type
    ) -> Callable[_P, Iterator[pb.ExportSuppressionsResponse]]: ...
    @overload
    def __get__(
        self, client: Asynchronous, owner: type
    ) -> Callable[_P, AsyncIterator[pb.ExportSuppressionsResponse]]: ...
    def __get__(self, client: object, owner: type) -> Any:
        if client is None:
            return self
        build = self.build
        export = client._export  # type: ignore[attr-defined]

        def call(*args: Any, **kwargs: Any) -> Any:
            return export(build(*args, **kwargs))

        call.__doc__ = build.__doc__
        return call


class Restart:
    """What both export loops share: the request to (re)open after the last message, and
    the delay before restarting after a failure a restart cures."""

    def __init__(self, plan: ExportPlan) -> None:
        self._plan = plan
        self._token = plan.request.resume_token
        self._backoff = Backoff()

    def request(self) -> pb.ExportSuppressionsRequest:
        return self._plan.resumed(self._token)

    def accept(self, message: pb.ExportSuppressionsResponse) -> None:
        self._backoff.reset()
        self._token = message.resume_token

    def failed(self, error: grpc.RpcError) -> float:
        translated = translate(error)
        if not resumable(translated):
            raise translated from None
        return self._backoff.next()


class Methods:
    """Every RPC of dnd.v1.DndService, once (the parity test holds this list to the proto)."""

    get_status = Unary(rq.get_status)
    set_dnd = Unary(rq.set_dnd)
    check_send = Unary(rq.check_send)
    batch_check_send = Unary(rq.batch_check_send)
    process_inbound_message = Unary(rq.process_inbound_message)
    report_sms_delivery_failure = Unary(rq.report_sms_delivery_failure)
    report_email_event = Unary(rq.report_email_event)
    list_history = Unary(rq.list_history)
    get_keyword_settings = Unary(rq.get_keyword_settings)
    update_keyword_settings = Unary(rq.update_keyword_settings)
    get_compliance_replies = Unary(rq.get_compliance_replies)
    update_compliance_replies = Unary(rq.update_compliance_replies)
    report_delivery_event = Unary(rq.report_delivery_event)
    record_consent = Unary(rq.record_consent)
    revoke_consent = Unary(rq.revoke_consent)
    get_consent_policy = Unary(rq.get_consent_policy)
    update_consent_policy = Unary(rq.update_consent_policy)
    get_delivery_event_mappings = Unary(rq.get_delivery_event_mappings)
    update_delivery_event_mappings = Unary(rq.update_delivery_event_mappings)
    get_server_info = Unary(rq.get_server_info)
    get_quiet_hours_settings = Unary(rq.get_quiet_hours_settings)
    update_quiet_hours_settings = Unary(rq.update_quiet_hours_settings)
    erase_contact = Unary(rq.erase_contact)
    get_block_expiry_settings = Unary(rq.get_block_expiry_settings)
    update_block_expiry_settings = Unary(rq.update_block_expiry_settings)
    watch = Stream(rq.watch_changes)
    bulk_set_dnd = Unary(rq.bulk_set_dnd)
    list_blocks = Unary(rq.list_blocks)
    list_suppressions = Unary(rq.list_suppressions)
    export_suppressions = ExportStream(rq.export_suppressions)


class Blocking:
    """Marker base of the blocking client (selects the blocking method types)."""


class Asynchronous:
    """Marker base of the asyncio client (selects the awaitable method types)."""


class Attempts:
    """The client's own retries of a write that carries an idempotency key: after each
    failure, the delay before the next attempt, or the translated error to raise."""

    def __init__(self, prepared: Prepared[Any], max_attempts: int) -> None:
        self._retry = prepared.retry
        self._left = max_attempts - 1
        self._backoff = Backoff(maximum=2.0)

    def after(self, error: grpc.RpcError) -> float:
        translated = translate(error)
        if self._retry and isinstance(translated, Unavailable) and self._left > 0:
            self._left -= 1
            return self._backoff.next()
        raise translated from None


class Resume:
    """What both watch loops share: the request to (re)open, the cursor to resume from, and
    the delay before reconnecting."""

    def __init__(self, plan: WatchPlan) -> None:
        self._plan = plan
        self._cursor = plan.after_cursor
        self._backoff = Backoff()

    def request(self) -> pb.WatchChangesRequest:
        return self._plan.request(self._cursor)

    def accept(self, message: pb.WatchChangesResponse) -> list[WatchItem]:
        """The items to yield for ``message``: its event, its events (several sent together),
        or its bookmark when asked for."""
        self._backoff.reset()
        if message.HasField("event"):
            self._cursor = message.event.cursor
            return [message.event]
        if message.HasField("events"):
            events = list(message.events.events)
            if events:
                self._cursor = events[-1].cursor
            return list(events)
        self._cursor = message.bookmark.cursor
        return [message.bookmark] if self._plan.bookmarks else []

    def failed(self, error: grpc.RpcError) -> float:
        """The delay before resuming after ``error``; raises when a resume cannot help."""
        translated = translate(error)
        if not resumable(translated):
            raise translated from None
        return self._backoff.next()

    def ended(self) -> float:
        """The server ended the stream without an error: reconnect too."""
        return self._backoff.next()
