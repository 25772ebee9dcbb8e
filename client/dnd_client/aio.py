"""AsyncDndClient: the typed asyncio client (grpc.aio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, TypeVar

import grpc
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from dnd_client import _requests as rq
from dnd_client._channel import ChannelSettings, metadata
from dnd_client._requests import DndAction
from dnd_client._watch import Backoff, resumable
from dnd_client.errors import Unavailable, translate
from dnd_client.types import Channel, Direction, EmailEvent, Reason, SendKind, Source

_T = TypeVar("_T")


class AsyncDndClient:
    """Typed client of dnd-service for asyncio code.

    ``timeout`` is the default per-call deadline (seconds). Reads are retried on UNAVAILABLE
    by gRPC; writes only when they carry an ``idempotency_key`` (then a retry can never apply
    twice). Use as ``async with AsyncDndClient("host:50051") as dnd: ...``.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 5.0,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
        keepalive_seconds: float = 30.0,
        max_attempts: int = 5,
    ) -> None:
        settings = ChannelSettings(
            target,
            tls,
            root_certificates,
            client_certificate,
            client_key,
            keepalive_seconds,
            max_attempts,
        )
        credentials = settings.credentials()
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=settings.options())
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=settings.options())
        self._stub = dnd_pb2_grpc.DndServiceStub(self._channel)
        self._metadata = metadata(token)
        self._timeout = timeout
        self._max_attempts = max_attempts

    async def __aenter__(self) -> AsyncDndClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(
        self, method: Any, request: Any, timeout: float | None, retry: bool = False
    ) -> Any:
        backoff = Backoff(maximum=2.0)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(
                    request, timeout=timeout or self._timeout, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as error:
                translated = translate(error)
                if retry and isinstance(translated, Unavailable) and attempt < self._max_attempts:
                    await asyncio.sleep(backoff.next())
                    continue
                raise translated from None

    async def get_status(
        self,
        location_id: str,
        contact_id: str,
        *,
        phone_numbers: Iterable[str] = (),
        email_addresses: Iterable[str] = (),
        timeout: float | None = None,
    ) -> pb.ContactStatus:
        request = rq.get_status(location_id, contact_id, phone_numbers, email_addresses)
        answer: pb.GetStatusResponse = await self._call(self._stub.GetStatus, request, timeout)
        return answer.status

    async def set_dnd(
        self,
        location_id: str,
        contact_id: str,
        *,
        action: DndAction,
        source: Source,
        direction: Direction = Direction.OUTBOUND,
        channel: Channel | None = None,
        all_channels: bool = False,
        reason: Reason | None = None,
        actor_id: str = "",
        note: str = "",
        evidence: str = "",
        provider_detail: str = "",
        suppression_removal_confirmed: bool = False,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        address: str | None = None,
        timeout: float | None = None,
    ) -> pb.SetDndResponse:
        request = rq.set_dnd(
            location_id,
            contact_id,
            action,
            source,
            direction,
            channel,
            all_channels,
            reason,
            actor_id,
            note,
            evidence,
            provider_detail,
            suppression_removal_confirmed,
            expected_version,
            idempotency_key,
            address,
        )
        answer: pb.SetDndResponse = await self._call(
            self._stub.SetDnd, request, timeout, retry=bool(idempotency_key)
        )
        return answer

    async def check_send(
        self,
        location_id: str,
        contact_id: str,
        channel: Channel,
        *,
        direction: Direction = Direction.OUTBOUND,
        send_kind: SendKind | None = None,
        address: str | None = None,
        timeout: float | None = None,
    ) -> pb.CheckSendResponse:
        request = rq.check_send(location_id, contact_id, channel, direction, send_kind, address)
        answer: pb.CheckSendResponse = await self._call(self._stub.CheckSend, request, timeout)
        return answer

    async def process_inbound_message(
        self,
        location_id: str,
        contact_id: str,
        body: str,
        *,
        channel: Channel = Channel.SMS,
        from_address: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> pb.ProcessInboundMessageResponse:
        request = rq.inbound_message(
            location_id, contact_id, body, channel, from_address, idempotency_key
        )
        answer: pb.ProcessInboundMessageResponse = await self._call(
            self._stub.ProcessInboundMessage, request, timeout, retry=bool(idempotency_key)
        )
        return answer

    async def report_sms_delivery_failure(
        self,
        location_id: str,
        contact_id: str,
        *,
        provider: str,
        error_code: str,
        to_address: str | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> pb.ReportSmsDeliveryFailureResponse:
        request = rq.sms_failure(
            location_id, contact_id, provider, error_code, to_address, idempotency_key
        )
        answer: pb.ReportSmsDeliveryFailureResponse = await self._call(
            self._stub.ReportSmsDeliveryFailure, request, timeout, retry=bool(idempotency_key)
        )
        return answer

    async def report_email_event(
        self,
        location_id: str,
        contact_id: str,
        *,
        provider: str,
        event: EmailEvent,
        to_address: str | None = None,
        provider_detail: str = "",
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> pb.ReportEmailEventResponse:
        request = rq.email_event(
            location_id, contact_id, provider, event, to_address, provider_detail, idempotency_key
        )
        answer: pb.ReportEmailEventResponse = await self._call(
            self._stub.ReportEmailEvent, request, timeout, retry=bool(idempotency_key)
        )
        return answer

    async def list_history(
        self,
        location_id: str,
        contact_id: str,
        *,
        page_size: int = 50,
        page_token: str = "",
        timeout: float | None = None,
    ) -> pb.ListHistoryResponse:
        request = rq.list_history(location_id, contact_id, page_size, page_token)
        answer: pb.ListHistoryResponse = await self._call(self._stub.ListHistory, request, timeout)
        return answer

    async def get_keyword_settings(
        self, location_id: str, *, timeout: float | None = None
    ) -> pb.GetKeywordSettingsResponse:
        request = pb.GetKeywordSettingsRequest(location_id=location_id)
        answer: pb.GetKeywordSettingsResponse = await self._call(
            self._stub.GetKeywordSettings, request, timeout
        )
        return answer

    async def update_keyword_settings(
        self,
        location_id: str,
        *,
        extra_opt_out_words: Iterable[str] = (),
        extra_opt_in_words: Iterable[str] = (),
        detect_revocation_phrases: bool = False,
        timeout: float | None = None,
    ) -> pb.KeywordSettings:
        request = rq.update_keyword_settings(
            location_id, extra_opt_out_words, extra_opt_in_words, detect_revocation_phrases
        )
        answer: pb.UpdateKeywordSettingsResponse = await self._call(
            self._stub.UpdateKeywordSettings, request, timeout, retry=True
        )
        return answer.settings

    async def watch(
        self,
        *,
        location_ids: Iterable[str] = (),
        channels: Iterable[Channel] = (),
        directions: Iterable[Direction] = (),
        sources: Iterable[Source] = (),
        after_cursor: str | None = None,
        bookmarks: bool = False,
    ) -> AsyncIterator[pb.ChangeEvent | pb.Bookmark]:
        """Every change after ``after_cursor`` (None: from now), for ever.

        Survives disconnects and server restarts: reconnects with backoff and resumes from
        the last cursor seen, so no event is yielded twice or skipped. Raises CursorExpired
        when the server no longer has the changes after the cursor. With ``bookmarks`` the
        stream's bookmarks are yielded too (their ``cursor`` is a resume point).
        """
        filters = (list(location_ids), list(channels), list(directions), list(sources))
        cursor = after_cursor
        backoff = Backoff()
        while True:
            request = rq.watch(*filters, after_cursor=cursor)
            call = self._stub.WatchChanges(request, metadata=self._metadata)
            try:
                async for message in call:
                    backoff.reset()
                    if message.HasField("event"):
                        cursor = message.event.cursor
                        yield message.event
                    else:
                        cursor = message.bookmark.cursor
                        if bookmarks:
                            yield message.bookmark
            except grpc.aio.AioRpcError as error:
                translated = translate(error)
                if not resumable(translated):
                    raise translated from None
                await asyncio.sleep(backoff.next())
                continue
            finally:
                call.cancel()
            # The server ended the stream without an error: reconnect too.
            await asyncio.sleep(backoff.next())
