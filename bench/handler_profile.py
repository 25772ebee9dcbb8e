"""In-process cost of the hot handlers without gRPC or a database: the servicer's CheckSend and
BatchCheckSend called directly on a warm cache (the data of bench/run.py: 1,000 contacts, every
10th with SMS DND, every 7th with EMAIL DND), timed whole and part by part, plus a cProfile of
each. What h2load measures is this plus the gRPC stack; this isolates the Python handler code
(compare with the Health/Check cost in run.py's table). Used by ``run.py --profile``; also::

    .venv/bin/python bench/handler_profile.py

It builds server objects directly (``DndServicer``, ``Runtime``, ``DndService``,
``ContactCache``), so it follows the server's internal API: when that changes, it says so and
skips.
"""

from __future__ import annotations

import asyncio
import cProfile
import datetime as dt
import io
import pstats
import re
import time
from collections.abc import Callable
from typing import Any

LOCATION = "hot-w1"
CONTACTS = 1000


class _Context:
    """The little of grpc.aio.ServicerContext the unary handlers touch on success."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort_with_status(self, status: Any) -> None:
        # A handler that fails answers a status: here, the measurement stops saying which.
        raise RuntimeError(f"the handler answered {status.code.name}: {status.details}")


class _SettingsStore:
    """The only store reads a warm check makes: a location's consent policy and quiet-hours
    settings (a check of a stated purpose reads them once, then from the service's caches).
    The location has stored neither, as in bench/run.py."""

    async def get_consent_policy(self, location_id: str) -> Any:
        from dnd_server.domain.consent import NO_POLICY

        return NO_POLICY

    async def get_quiet_hours(self, location_id: str) -> Any:
        from dnd_server.domain.quiet_hours import NO_SETTINGS

        return NO_SETTINGS


def _setup() -> tuple[Any, Any, Any]:
    import structlog
    from dnd.v1 import dnd_pb2 as pb
    from dnd_server.cache import ContactCache, Entry, PolicyCache
    from dnd_server.domain.consent import NO_POLICY
    from dnd_server.domain.model import Block, Channel, ContactState, Direction, Reason, Source
    from dnd_server.rpc.servicer import DndServicer
    from dnd_server.runtime import Runtime
    from dnd_server.service import DndService

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # no log lines here
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cache = ContactCache(100_000)
    cache.feed_ready(0)
    for i in range(CONTACTS):
        blocks = []
        for channel, every in ((Channel.SMS, 10), (Channel.EMAIL, 7)):
            if i % every == 0:
                blocks.append(
                    Block(
                        direction=Direction.OUTBOUND,
                        scope=channel,
                        reason=Reason.MANUAL,
                        source=Source.USER,
                        actor_id="hot-bench-seed",
                        since=now,
                    )
                )
        state = ContactState(
            location_id=LOCATION,
            contact_id=f"c{i:05d}",
            blocks=tuple(blocks),
            version=len(blocks),
            updated_at=now if blocks else None,
        )
        cache.put((LOCATION, f"c{i:05d}"), Entry(state, i + 1))
    servicer = DndServicer()
    # Cache hits only; the location has no consent policy and no quiet-hours settings, as in
    # bench/run.py (a stated purpose reads both once from the store, then from caches).
    policies = PolicyCache(3600)
    policies.put(LOCATION, NO_POLICY)
    store = _SettingsStore()
    service = DndService(store=store, cache=cache, policies=policies)
    servicer.runtime = Runtime(
        pool=None, store=store, cache=cache, feed=None, service=service, watch=None
    )
    single = {
        name: pb.CheckSendRequest(
            location_id=LOCATION,
            contact_id=contact,
            channel=pb.CHANNEL_SMS,
            send_kind=pb.SEND_KIND_AUTOMATED,
            purpose=purpose,
        )
        for name, contact, purpose in (
            ("denied", "c00000", pb.PURPOSE_UNSPECIFIED),
            ("denied, purpose MARKETING", "c00000", pb.PURPOSE_MARKETING),
            ("allowed", "c00001", pb.PURPOSE_UNSPECIFIED),
            ("allowed, purpose MARKETING", "c00001", pb.PURPOSE_MARKETING),
        )
    }
    batch = pb.BatchCheckSendRequest(
        location_id=LOCATION,
        channel=pb.CHANNEL_SMS,
        send_kind=pb.SEND_KIND_AUTOMATED,
        targets=[pb.CheckTarget(contact_id=f"c{i:05d}") for i in range(CONTACTS)],
    )
    return servicer, single, batch


def _per_call(fn: Callable[[], Any], calls: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):  # best of 3: the machine is shared
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def _top(profile: cProfile.Profile, lines: int) -> list[str]:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(text) if "ncalls" in line), 0)
    shown = text[start : start + lines + 1]
    return [re.sub(r"\S*/(dnd_server|python3\.\d+)/", r"\1/", line) for line in shown]


def measure(profile_lines: int = 10) -> dict[str, Any]:
    from dnd.v1 import dnd_pb2 as pb
    from dnd_server.domain.rules import decide_send
    from dnd_server.rpc import validate
    from dnd_server.rpc.convert import block_to_pb, suppression_to_pb

    servicer, single, batch = _setup()
    ctx = _Context()
    loop = asyncio.new_event_loop()
    try:

        def call(method: Any, request: Any) -> Callable[[], Any]:
            return lambda: loop.run_until_complete(method(request, ctx))

        found: dict[str, Any] = {"handlers_us": {}, "batch_parts_us": {}, "profiles": {}}
        for name, request in single.items():
            found["handlers_us"][f"CheckSend ({name})"] = round(
                _per_call(call(servicer.CheckSend, request), 3000), 1
            )
        found["handlers_us"]["loop.run_until_complete overhead"] = round(
            _per_call(lambda: loop.run_until_complete(asyncio.sleep(0)), 3000), 1
        )
        batch_us = _per_call(call(servicer.BatchCheckSend, batch), 20)
        found["handlers_us"][f"BatchCheckSend ({CONTACTS})"] = round(batch_us, 1)
        found["handlers_us"]["BatchCheckSend per contact"] = round(batch_us / CONTACTS, 2)

        # The batch handler, step by step (what servicer.BatchCheckSend does).
        svc = servicer.runtime.service
        parts = found["batch_parts_us"]
        parts["validate.batch_check_send"] = round(
            _per_call(lambda: validate.batch_check_send(batch, "US"), 20), 1
        )
        location, channel, direction, targets, options, _ = validate.batch_check_send(batch, "US")
        ids = [c for c, _ in targets]
        parts["DndService.read (cache hits)"] = round(
            _per_call(lambda: loop.run_until_complete(svc.read(location, ids, [], options)), 20), 1
        )
        snapshot = loop.run_until_complete(svc.read(location, ids, [], options))
        parts["decide_send x1000"] = round(
            _per_call(
                lambda: [decide_send(snapshot.contacts[c].blocks, channel, direction) for c in ids],
                20,
            ),
            1,
        )
        answers = loop.run_until_complete(
            svc.batch_check(location, channel, direction, targets, options)
        )

        def build() -> Any:
            return pb.BatchCheckSendResponse(
                results=[
                    pb.CheckResult(
                        contact_id=contact_id,
                        allowed=decision.allowed,
                        denied_by=[block_to_pb(b) for b in decision.denied_by],
                        denied_by_address=[
                            suppression_to_pb(s) for s in decision.denied_by_address
                        ],
                        version=state.version,
                        explanation=decision.explanation,
                    )
                    for (contact_id, _), (decision, state) in zip(targets, answers, strict=True)
                ]
            )

        parts["build BatchCheckSendResponse"] = round(_per_call(build, 20), 1)
        response = build()
        parts["SerializeToString (done by grpc)"] = round(
            _per_call(response.SerializeToString, 20), 1
        )
        for label, fn, calls in (
            ("CheckSend (denied)", call(servicer.CheckSend, single["denied"]), 3000),
            (
                "CheckSend (denied, purpose MARKETING)",
                call(servicer.CheckSend, single["denied, purpose MARKETING"]),
                3000,
            ),
            ("BatchCheckSend", call(servicer.BatchCheckSend, batch), 10),
        ):
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(calls):
                fn()
            profile.disable()
            found["profiles"][label] = _top(profile, profile_lines)
        return found
    finally:
        loop.close()


def render(found: dict[str, Any]) -> str:
    if "skipped" in found:
        return f"handler micro-profile skipped: {found['skipped']}"
    lines = ["handler micro-profile (in-process, no gRPC, warm cache; best of 3):"]
    lines += [f"  {name:<44} {us:>10,.1f} us" for name, us in found["handlers_us"].items()]
    lines.append("  BatchCheckSend step by step:")
    lines += [f"    {name:<42} {us:>10,.1f} us" for name, us in found["batch_parts_us"].items()]
    for label, top in found["profiles"].items():
        lines.append(f"  cProfile {label} (by own time):")
        lines += [f"    {line}" for line in top]
    return "\n".join(lines)


def safe_measure() -> dict[str, Any]:
    try:
        return measure()
    except Exception as error:  # the server's internal API moved: say so, do not fail the run
        return {"skipped": f"{type(error).__name__}: {error}"}


if __name__ == "__main__":
    print(render(safe_measure()))
