"""Each purpose against each kind of block, over real gRPC on real PostgreSQL: CheckSend and
BatchCheckSend answer allowed or denied, and ``denial`` says what denied it.

- DND blocks (every v1 reason family) and address suppressions deny every purpose, stated or
  not, except the one COMPLIANCE_REPLY right after an opt-out (keyword, unsubscribe);
- marketing-only opt-outs (SetDnd marketing_only, Meta's WhatsApp opt-out, a marketing
  stream's unsubscribe) deny MARKETING and unstated purposes only;
- BatchCheckSend answers the same per result and refuses COMPLIANCE_REPLY.

The expectations are written out here, not computed with the service's own rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories
from tests.support import bad_fields

T = 10.0
# A planned time quiet hours allow wherever the number is: these checks are about DND, not the
# hour (docs/quiet-hours.md).
DAYTIME = factories.at(factories.DAYTIME)
R = pb.Reason
SMS, EMAIL, WHATSAPP = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_WHATSAPP
PHONE = "+14155552671"
MAIL = "pat@example.com"
PURPOSES = {
    "unspecified": pb.PURPOSE_UNSPECIFIED,
    "marketing": pb.PURPOSE_MARKETING,
    "informational": pb.PURPOSE_INFORMATIONAL,
    "transactional": pb.PURPOSE_TRANSACTIONAL,
    "compliance-reply": pb.PURPOSE_COMPLIANCE_REPLY,
}
DND, ADDRESS, MARKETING, ALLOWED = (
    pb.DENIAL_DND_BLOCK,
    pb.DENIAL_ADDRESS_SUPPRESSED,
    pb.DENIAL_MARKETING_OPT_OUT,
    None,
)

Setup = Callable[[Any, str, str], object]


def set_dnd(channel: int | None, reason: int = R.REASON_MANUAL, **fields: Any) -> Setup:
    return lambda stub, loc, contact: stub.SetDnd(
        factories.enable(loc, contact, channel, reason=reason, **fields), timeout=T
    )


def marketing_only(channel: int | None) -> Setup:
    scope = factories.scope(channel)
    scope.marketing_only = True
    return lambda stub, loc, contact: stub.SetDnd(
        factories.enable(loc, contact, scope=scope), timeout=T
    )


def stop() -> Setup:
    return lambda stub, loc, contact: stub.ProcessInboundMessage(
        factories.inbound(loc, contact, "STOP", from_address=PHONE), timeout=T
    )


def sms_failure(code: str) -> Setup:
    return lambda stub, loc, contact: stub.ReportSmsDeliveryFailure(
        factories.sms_failure(loc, contact, code, to_address=PHONE), timeout=T
    )


def email_event(event: int, marketing_stream: bool = False) -> Setup:
    return lambda stub, loc, contact: stub.ReportEmailEvent(
        factories.email_event(
            loc, contact, event, to_address=MAIL, marketing_stream=marketing_stream
        ),
        timeout=T,
    )


def delivery_event(code: str) -> Setup:
    return lambda stub, loc, contact: stub.ReportDeliveryEvent(
        factories.delivery_event(loc, contact, code, address=PHONE), timeout=T
    )


def other_contact_stop() -> Setup:
    """Another contact texts STOP from PHONE: the number is suppressed in the location."""
    return lambda stub, loc, contact: stub.ProcessInboundMessage(
        factories.inbound(loc, f"{contact}-holder", "STOP", from_address=PHONE), timeout=T
    )


@dataclass(frozen=True)
class Kind:
    """A kind of block: how it is set, the channel and address checked, the reason that
    denies, and whether it is a DND opt-out (``dnd``), an address suppression of another
    contact (``address``) or a marketing-only opt-out (``marketing``); ``reply``: the one
    compliance reply after it is allowed."""

    setup: Setup | None
    channel: int
    address: str
    reason: int
    family: str
    reply: bool = False


KINDS: dict[str, Kind] = {
    "nothing": Kind(None, SMS, PHONE, R.REASON_UNSPECIFIED, "none"),
    "manual-one-channel": Kind(set_dnd(SMS), SMS, PHONE, R.REASON_MANUAL, "dnd"),
    "manual-all-channels": Kind(set_dnd(None), EMAIL, MAIL, R.REASON_MANUAL, "dnd"),
    "sms-opt-out-keyword": Kind(
        stop(), SMS, PHONE, R.REASON_SMS_OPT_OUT_KEYWORD, "dnd", reply=True
    ),
    "sms-carrier-permanent": Kind(
        sms_failure("30004"), SMS, PHONE, R.REASON_SMS_CARRIER_PERMANENT, "dnd"
    ),
    "sms-carrier-temporary": Kind(
        sms_failure("30003"), SMS, PHONE, R.REASON_SMS_CARRIER_TEMPORARY, "dnd"
    ),
    "email-hard-bounce": Kind(
        email_event(pb.EMAIL_EVENT_BOUNCE), EMAIL, MAIL, R.REASON_EMAIL_HARD_BOUNCE, "dnd"
    ),
    "email-generic-failure": Kind(
        email_event(pb.EMAIL_EVENT_GENERIC_FAILURE),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_GENERIC_FAILURE,
        "dnd",
    ),
    "email-suppress-bounce": Kind(
        email_event(pb.EMAIL_EVENT_SUPPRESS_BOUNCE),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_SUPPRESS_BOUNCE,
        "dnd",
    ),
    "email-suppress-unsubscribe": Kind(
        email_event(pb.EMAIL_EVENT_SUPPRESS_UNSUBSCRIBE),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE,
        "dnd",
    ),
    "email-suppress-complaint": Kind(
        email_event(pb.EMAIL_EVENT_SUPPRESS_COMPLAINT),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_SUPPRESS_COMPLAINT,
        "dnd",
    ),
    "email-spam-complaint": Kind(
        email_event(pb.EMAIL_EVENT_SPAM_COMPLAINT),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_SPAM_COMPLAINT,
        "dnd",
    ),
    "email-unsubscribe-link": Kind(
        email_event(pb.EMAIL_EVENT_UNSUBSCRIBE_LINK),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_UNSUBSCRIBE_LINK,
        "dnd",
        reply=True,
    ),
    "email-list-unsubscribe-post": Kind(
        email_event(pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_UNSUBSCRIBE_LINK,
        "dnd",
        reply=True,
    ),
    "address-suppressed-by-another-contact": Kind(
        other_contact_stop(), SMS, PHONE, R.REASON_SMS_OPT_OUT_KEYWORD, "address"
    ),
    "marketing-only-one-channel": Kind(
        marketing_only(SMS), SMS, PHONE, R.REASON_MARKETING_OPT_OUT, "marketing"
    ),
    "marketing-only-all-channels": Kind(
        marketing_only(None), EMAIL, MAIL, R.REASON_MARKETING_OPT_OUT, "marketing"
    ),
    "whatsapp-error-131050": Kind(
        delivery_event("131050"), WHATSAPP, PHONE, R.REASON_WHATSAPP_MARKETING_OPT_OUT, "marketing"
    ),
    "whatsapp-stop-marketing": Kind(
        delivery_event("user_preferences:stop_marketing"),
        WHATSAPP,
        PHONE,
        R.REASON_WHATSAPP_MARKETING_OPT_OUT,
        "marketing",
    ),
    "email-marketing-unsubscribe": Kind(
        email_event(pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST, marketing_stream=True),
        EMAIL,
        MAIL,
        R.REASON_EMAIL_MARKETING_UNSUBSCRIBE,
        "marketing",
    ),
}


def expected(kind: Kind, purpose: str) -> int | None:
    """The denial the spec gives (None: allowed)."""
    if kind.family == "none":
        return ALLOWED
    if kind.family == "marketing":
        return MARKETING if purpose in ("unspecified", "marketing") else ALLOWED
    if purpose == "compliance-reply" and kind.reply:
        return ALLOWED
    return DND if kind.family == "dnd" else ADDRESS


CASES = [(k, p) for k in KINDS for p in PURPOSES]


@pytest.mark.parametrize(("kind_name", "purpose_name"), CASES, ids=[f"{k}:{p}" for k, p in CASES])
def test_purpose_against_block(
    stub: Any, loc: str, contact: str, kind_name: str, purpose_name: str
) -> None:
    kind, purpose = KINDS[kind_name], PURPOSES[purpose_name]
    if kind.setup is not None:
        kind.setup(stub, loc, contact)
    denial = expected(kind, purpose_name)

    if purpose == pb.PURPOSE_COMPLIANCE_REPLY:
        with pytest.raises(grpc.RpcError) as refused:
            stub.BatchCheckSend(
                factories.batch_check(
                    loc, factories.targets((contact, kind.address)), kind.channel, purpose=purpose
                ),
                timeout=T,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(refused.value) == ["purpose"]
    else:
        batch = stub.BatchCheckSend(
            factories.batch_check(
                loc,
                factories.targets((contact, kind.address), contact),
                kind.channel,
                purpose=purpose,
                send_at=DAYTIME,
            ),
            timeout=T,
        )
        with_address, without = batch.results
        assert_answer(with_address, denial, kind)
        # Without the address, a suppression of the address cannot deny.
        assert_answer(without, ALLOWED if kind.family == "address" else denial, kind)

    answer = stub.CheckSend(
        factories.check(
            loc, contact, kind.channel, address=kind.address, purpose=purpose, send_at=DAYTIME
        ),
        timeout=T,
    )
    assert_answer(answer, denial, kind)


def assert_answer(answer: Any, denial: int | None, kind: Kind) -> None:
    if denial is None:
        assert answer.allowed, answer.explanation
        assert answer.denial == pb.DENIAL_UNSPECIFIED
        return
    assert not answer.allowed, answer.explanation
    assert pb.Denial.Name(answer.denial) == pb.Denial.Name(denial), answer.explanation
    if denial == ADDRESS:
        assert [s.reason for s in answer.denied_by_address] == [kind.reason]
        assert list(answer.denied_by) == []
    else:
        assert kind.reason in [b.reason for b in answer.denied_by]
        marketing = [b.scope.marketing_only for b in answer.denied_by]
        assert marketing == [kind.family == "marketing"] * len(marketing)
