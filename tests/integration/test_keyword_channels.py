"""Compliance replies, keywords per language and keywords on every messaging channel, over real
gRPC on real PostgreSQL: STOP, ARRET and PARAR each answer the right confirmation in the right
language and set DND; a second STOP gets no second confirmation (and of concurrent duplicates
at most one does); the reply then goes out with CheckSend(COMPLIANCE_REPLY) exactly once; HELP
always answers; START that opted in confirms; STOP on WhatsApp blocks WhatsApp and START lifts
it; RCS shares opt-outs with SMS when the location says so, and works wherever channels do
(GetStatus, all-channels blocks, WatchChanges' channel filter); GetComplianceReplies and
UpdateComplianceReplies with their validation."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import Channel, language_keywords, reply_texts

from tests import factories
from tests.clients import KINDS, Client
from tests.support import Database, ServerProcess, Watcher, bad_fields, cursor_codec, new_id

T = 10.0
SMS, WHATSAPP, RCS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_WHATSAPP, pb.CHANNEL_RCS, pb.CHANNEL_EMAIL
PHONE = "+14155552671"
OPTED_OUT, OPTED_IN, HELP, NONE = (
    pb.KEYWORD_ACTION_OPTED_OUT,
    pb.KEYWORD_ACTION_OPTED_IN,
    pb.KEYWORD_ACTION_HELP,
    pb.KEYWORD_ACTION_NONE,
)
OUT_CONFIRM = pb.COMPLIANCE_REPLY_KIND_OPT_OUT_CONFIRMATION
IN_CONFIRM = pb.COMPLIANCE_REPLY_KIND_OPT_IN_CONFIRMATION
HELP_REPLY = pb.COMPLIANCE_REPLY_KIND_HELP
BRAND = factories.BRAND


def configure(stub: Any, loc: str, **keyword_fields: Any) -> None:
    """Brand and support set; Spanish and French keywords on (unless ``keyword_fields``)."""
    stub.UpdateComplianceReplies(factories.compliance_replies(loc), timeout=T)
    fields = keyword_fields or {"languages": ["es", "fr"]}
    stub.UpdateKeywordSettings(factories.keyword_settings(loc, **fields), timeout=T)


def text(
    stub: Any, loc: str, contact: str, body: str, channel: int = SMS, address: str = PHONE
) -> pb.ProcessInboundMessageResponse:
    request = factories.inbound(loc, contact, body, channel, from_address=address)
    answer: pb.ProcessInboundMessageResponse = stub.ProcessInboundMessage(request, timeout=T)
    return answer


def check(
    stub: Any, loc: str, contact: str, channel: int = SMS, **fields: Any
) -> pb.CheckSendResponse:
    answer: pb.CheckSendResponse = stub.CheckSend(
        factories.check(loc, contact, channel, address=PHONE, **fields), timeout=T
    )
    return answer


# --- the confirmation in the keyword's language ----------------------------------------------

CONFIRMATIONS = [
    # (word, language, a phrase of the default opt-out confirmation in it)
    ("STOP", "en", "You are unsubscribed"),
    ("Arrêt", "fr", "Désabonnement confirmé"),
    ("ARRET", "fr", "Désabonnement confirmé"),
    ("parar", "es", "Baja confirmada"),
]


@pytest.mark.parametrize(("word", "language", "phrase"), CONFIRMATIONS)
def test_each_opt_out_word_confirms_in_its_language_and_sets_dnd(
    stub: Any, loc: str, contact: str, word: str, language: str, phrase: str
) -> None:
    configure(stub, loc)
    answer = text(stub, loc, contact, word)
    assert answer.action == OPTED_OUT and answer.changed and answer.sms_blocked
    assert (answer.reply_kind, answer.reply_language) == (OUT_CONFIRM, language)
    assert answer.reply_text == f"{BRAND}: {phrase}" + answer.reply_text.split(phrase, 1)[1]
    assert pb.CHANNEL_SMS in answer.status.blocked_channels
    assert not check(stub, loc, contact).allowed


def test_stop_is_answered_in_the_default_language(stub: Any, loc: str, contact: str) -> None:
    configure(stub, loc, languages=["fr"], default_language="fr")
    answer = text(stub, loc, contact, "STOP")
    assert answer.reply_language == "fr" and "Désabonnement" in answer.reply_text


def test_a_location_without_brand_confirms_opt_outs_only(stub: Any, loc: str, contact: str) -> None:
    # The opt-out confirmation goes out anyway, naming no brand; HELP and the opt-in
    # confirmation need the brand and support contact.
    answer = text(stub, loc, contact, "STOP")
    assert answer.action == OPTED_OUT and answer.changed
    assert (answer.reply_text, answer.reply_language, answer.reply_kind) == (
        "You are unsubscribed and will receive no more messages.",
        "en",
        OUT_CONFIRM,
    )
    assert text(stub, loc, contact, "HELP").reply_text == ""
    assert text(stub, loc, contact, "START").reply_text == ""
    french = text(stub, loc, new_id("contact"), "ARRET")
    assert (french.reply_language, french.reply_text) == (
        "fr",
        "Désabonnement confirmé. Vous ne recevrez plus de messages.",
    )


# --- at most one confirmation ---------------------------------------------------------------


def test_a_second_stop_gets_no_second_confirmation(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    configure(stub, loc)
    first = text(stub, loc, contact, "STOP")
    assert first.reply_kind == OUT_CONFIRM
    second = text(stub, loc, contact, "stop")
    assert second.action == OPTED_OUT and not second.changed
    assert (second.reply_text, second.reply_kind) == ("", 0)
    # Nor after START and STOP again within the day.
    assert text(stub, loc, contact, "START").reply_kind == IN_CONFIRM
    third = text(stub, loc, contact, "STOP")
    assert third.changed and third.reply_text == ""
    marks = db.fetch(
        "SELECT channel, kind FROM dnd_reply_marks WHERE location_id = $1 AND contact_id = $2",
        loc,
        contact,
    )
    assert [(m["channel"], m["kind"]) for m in marks] == [("SMS", "OPT_OUT_CONFIRMATION")]
    # A day later a new opt-out is confirmed again.
    db.execute(
        "UPDATE dnd_reply_marks SET last_at = last_at - interval '1 day' WHERE location_id = $1",
        loc,
    )
    assert text(stub, loc, contact, "START").reply_kind == IN_CONFIRM
    assert text(stub, loc, contact, "STOP").reply_kind == OUT_CONFIRM


def test_concurrent_duplicate_stops_get_one_confirmation(stub: Any, loc: str) -> None:
    configure(stub, loc)
    contact = new_id("contact")
    callers = 12
    barrier = threading.Barrier(callers)

    def one(_: int) -> pb.ProcessInboundMessageResponse:
        barrier.wait(timeout=T)
        return text(stub, loc, contact, "STOP")

    with ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(one, range(callers)))
    assert all(a.action == OPTED_OUT for a in answers)
    assert [a.reply_kind for a in answers].count(OUT_CONFIRM) == 1
    assert sum(a.changed for a in answers) == 1


def test_the_reply_goes_out_with_compliance_reply_once(stub: Any, loc: str, contact: str) -> None:
    configure(stub, loc)
    answer = text(stub, loc, contact, "PARAR")
    assert answer.reply_text
    reply = pb.PURPOSE_COMPLIANCE_REPLY
    first = check(stub, loc, contact, purpose=reply)
    assert first.allowed, first.explanation
    again = check(stub, loc, contact, purpose=reply)
    assert not again.allowed and again.denial == pb.DENIAL_COMPLIANCE_REPLY_SPENT
    assert not check(stub, loc, contact, purpose=pb.PURPOSE_MARKETING).allowed


# --- HELP and opt-in confirmations ------------------------------------------------------------


def test_help_always_answers_in_the_words_language(stub: Any, loc: str, contact: str) -> None:
    configure(stub, loc)
    for body, language in (("HELP", "en"), ("Aide", "fr"), ("ayuda", "es"), ("HELP", "en")):
        answer = text(stub, loc, contact, body)
        assert (answer.action, answer.reply_kind, answer.reply_language) == (
            HELP,
            HELP_REPLY,
            language,
        )
        assert factories.SUPPORT in answer.reply_text and not answer.changed
        text(stub, loc, contact, "STOP")


def test_an_opt_in_that_lifted_dnd_is_confirmed(stub: Any, loc: str, contact: str) -> None:
    configure(stub, loc)
    assert text(stub, loc, contact, "START").reply_text == ""  # nothing to lift
    text(stub, loc, contact, "ARRET")
    back = text(stub, loc, contact, "START")
    assert back.action == OPTED_IN and back.changed
    assert back.reply_kind == IN_CONFIRM and "Msg & data rates may apply" in back.reply_text
    text(stub, loc, contact, "PARAR")
    si = text(stub, loc, contact, "Sí")
    assert (si.action, si.reply_language) == (OPTED_IN, "es") and "Alta confirmada" in si.reply_text


def test_a_location_text_is_merged_and_sent(stub: Any, loc: str, contact: str) -> None:
    configure(stub, loc)
    own = "{brand}: done, no more texts. Questions: {support}"
    stub.UpdateComplianceReplies(
        factories.compliance_replies(
            loc, texts=[pb.ComplianceReplyTexts(language="en", opt_out_confirmation=own)]
        ),
        timeout=T,
    )
    answer = text(stub, loc, contact, "STOP")
    assert answer.reply_text == f"{BRAND}: done, no more texts. Questions: {factories.SUPPORT}"


def test_an_idempotent_retry_replays_the_reply(stub: Any, loc: str, contact: str) -> None:
    configure(stub, loc)
    request = factories.inbound(loc, contact, "STOP", from_address=PHONE, idempotency_key="k1")
    first = stub.ProcessInboundMessage(request, timeout=T)
    retry = stub.ProcessInboundMessage(request, timeout=T)
    assert first.reply_kind == OUT_CONFIRM and retry == first


# --- WhatsApp ------------------------------------------------------------------------------------


def test_whatsapp_stop_blocks_whatsapp_and_start_lifts_it(
    stub: Any, loc: str, contact: str
) -> None:
    configure(stub, loc)
    out = text(stub, loc, contact, "STOP", WHATSAPP)
    assert out.action == OPTED_OUT and out.changed and out.reply_kind == OUT_CONFIRM
    assert list(out.status.blocked_channels) == [WHATSAPP]
    [block] = out.status.blocks
    assert (block.reason, block.source) == (pb.REASON_KEYWORD_OPT_OUT, pb.SOURCE_CONTACT)
    assert not check(stub, loc, contact, WHATSAPP).allowed
    assert check(stub, loc, contact, SMS).allowed
    # Only the contact (or support with proof) lifts it: a user may not.
    with pytest.raises(grpc.RpcError) as refused:
        stub.SetDnd(factories.set_dnd(loc, contact, factories.DISABLE, WHATSAPP), timeout=T)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # START on SMS does not lift it; on WhatsApp it does.
    assert not text(stub, loc, contact, "START", SMS).changed
    back = text(stub, loc, contact, "START", WHATSAPP)
    assert back.action == OPTED_IN and back.changed and back.reply_kind == IN_CONFIRM
    assert check(stub, loc, contact, WHATSAPP).allowed


def test_revocation_phrases_act_on_whatsapp(stub: Any, loc: str, contact: str) -> None:
    stub.UpdateKeywordSettings(factories.keyword_settings(loc, detect=True), timeout=T)
    answer = text(stub, loc, contact, "please stop texting me", WHATSAPP)
    assert answer.action == OPTED_OUT and list(answer.status.blocked_channels) == [WHATSAPP]


# --- RCS ----------------------------------------------------------------------------------------


def test_rcs_keeps_its_opt_outs_unless_the_location_shares_them(
    stub: Any, loc: str, contact: str
) -> None:
    answer = text(stub, loc, contact, "STOP", RCS)
    assert list(answer.status.blocked_channels) == [RCS]
    assert check(stub, loc, contact, SMS).allowed
    assert not check(stub, loc, contact, RCS).allowed


def test_shared_opt_outs_block_sms_and_rcs_together(stub: Any, loc: str) -> None:
    configure(stub, loc, share_rcs_sms_opt_outs=True)
    read = stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=loc), timeout=T)
    assert read.settings.share_rcs_sms_opt_outs
    for first, then in ((RCS, SMS), (SMS, RCS)):
        contact = new_id("contact")
        out = text(stub, loc, contact, "STOP", first)
        assert list(out.status.blocked_channels) == [SMS, RCS]
        assert out.reply_kind == OUT_CONFIRM
        assert "SMS and RCS" in out.explanation
        assert not check(stub, loc, contact, then).allowed
        back = text(stub, loc, contact, "START", then)
        assert back.changed and list(back.status.blocked_channels) == []
        assert check(stub, loc, contact, first).allowed


def test_rcs_is_a_channel_everywhere(stub: Any, server: ServerProcess, loc: str) -> None:
    contact, other = new_id("contact"), new_id("contact")
    watcher = Watcher(server.addr, factories.watch(loc, channels=[RCS]))
    try:
        watcher.wait_bookmarks(1)
        set_rcs = stub.SetDnd(factories.set_dnd(loc, contact, channel=RCS), timeout=T)
        assert list(set_rcs.status.blocked_channels) == [RCS]
        sms = stub.SetDnd(factories.set_dnd(loc, other, channel=SMS), timeout=T)
        everything = stub.SetDnd(factories.set_dnd(loc, other, channel=None), timeout=T)
        assert RCS in everything.status.blocked_channels
        assert not check(stub, loc, other, RCS).allowed
        status = stub.GetStatus(factories.get_status(loc, contact), timeout=T).status
        assert list(status.blocked_channels) == [RCS]
        assert status.outbound == pb.DND_STATUS_PARTIAL
        events = watcher.wait_past(everything.cursor, cursor_codec(server.database_url))
        assert [(e.contact_id, e.version) for e in events] == [(contact, 1), (other, 2)]
        assert sms.cursor not in [e.cursor for e in events]
    finally:
        watcher.close()


# --- GetComplianceReplies / UpdateComplianceReplies ------------------------------------------


def get_replies(stub: Any, loc: str) -> pb.GetComplianceRepliesResponse:
    answer: pb.GetComplianceRepliesResponse = stub.GetComplianceReplies(
        pb.GetComplianceRepliesRequest(location_id=loc), timeout=T
    )
    return answer


def test_replies_of_a_location_never_configured_are_the_defaults(
    stub: Any, db: Database, loc: str
) -> None:
    answer = get_replies(stub, loc)
    assert not answer.configured and answer.brand_name == "" and list(answer.texts) == []
    assert [(r.language, r.kind) for r in answer.replies] == [
        (lang, kind)
        for lang in ("en", "es", "fr")
        for kind in (OUT_CONFIRM, IN_CONFIRM, HELP_REPLY)
    ]
    assert all(r.is_default and "{brand}" in r.template for r in answer.replies)
    assert db.fetch("SELECT 1 FROM dnd_compliance_replies WHERE location_id = $1", loc) == []


def test_update_replaces_and_reads_back_with_measures(stub: Any, loc: str) -> None:
    long_help = "{brand}: for help call {support} or write to us. Msg & data rates may apply. " * 2
    long_help += "Reply STOP to cancel."
    texts = [pb.ComplianceReplyTexts(language="en", help=long_help)]
    answer = stub.UpdateComplianceReplies(factories.compliance_replies(loc, texts=texts), timeout=T)
    assert answer.configured and answer.brand_name == BRAND
    read = get_replies(stub, loc)
    assert list(read.texts) == texts and read.replies == answer.replies
    by = {(r.language, r.kind): r for r in read.replies}
    helped = by[("en", HELP_REPLY)]
    assert not helped.is_default and helped.segments == 2 and "SMS segments" in helped.warning
    assert helped.text.startswith(f"{BRAND}: for help call {factories.SUPPORT}")
    fine = by[("es", OUT_CONFIRM)]
    assert (fine.encoding, fine.segments, fine.warning) == ("GSM-7", 1, "")
    # A second update replaces everything.
    stub.UpdateComplianceReplies(factories.compliance_replies(loc, brand_name="Other"), timeout=T)
    again = get_replies(stub, loc)
    assert again.brand_name == "Other" and list(again.texts) == []


INVALID = {
    "unknown-merge-field": (
        {"texts": [pb.ComplianceReplyTexts(language="en", help="{brand} {who} STOP {support}")]},
        "texts[0].help",
    ),
    "marketing-in-opt-out": (
        {
            "texts": [
                pb.ComplianceReplyTexts(language="en", opt_out_confirmation="{brand}: bye! 10% off")
            ]
        },
        "texts[0].opt_out_confirmation",
    ),
    "opt-in-without-rates": (
        {"texts": [pb.ComplianceReplyTexts(language="fr", opt_in_confirmation="{brand}: ARRET")]},
        "texts[0].opt_in_confirmation",
    ),
    "unknown-language": ({"texts": [pb.ComplianceReplyTexts(language="de")]}, "texts[0].language"),
    "no-brand": ({"brand_name": ""}, "brand_name"),
    "no-support": ({"support_contact": ""}, "support_contact"),
}


@pytest.mark.parametrize(("fields", "field"), INVALID.values(), ids=INVALID.keys())
def test_an_unusable_update_is_invalid_and_changes_nothing(
    stub: Any, loc: str, fields: dict[str, Any], field: str
) -> None:
    stub.UpdateComplianceReplies(factories.compliance_replies(loc), timeout=T)
    before = get_replies(stub, loc)
    with pytest.raises(grpc.RpcError) as refused:
        stub.UpdateComplianceReplies(factories.compliance_replies(loc, **fields), timeout=T)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_fields(refused.value)
    assert get_replies(stub, loc) == before


# --- keyword settings per language -----------------------------------------------------------


def test_keyword_settings_list_the_built_in_sets_and_take_languages(stub: Any, loc: str) -> None:
    read = stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=loc), timeout=T)
    sets = {s.language: s for s in read.built_in_words}
    assert list(sets) == ["en", "es", "fr"]
    assert {"PARAR", "ALTO", "CANCELAR", "STOP"} <= set(sets["es"].opt_out_words)
    assert {"ARRET", "ARRÊT", "STOP"} <= set(sets["fr"].opt_out_words)
    assert "AYUDA" in sets["es"].help_words and "AIDE" in sets["fr"].help_words
    extra = pb.LanguageKeywords(language="es", opt_out_words=["terminar"], opt_in_words=["volver"])
    stub.UpdateKeywordSettings(
        factories.keyword_settings(
            loc, languages=["es"], default_language="es", language_words=[extra]
        ),
        timeout=T,
    )
    settings = stub.GetKeywordSettings(
        pb.GetKeywordSettingsRequest(location_id=loc), timeout=T
    ).settings
    assert (list(settings.languages), settings.default_language) == (["es"], "es")
    assert list(settings.language_words[0].opt_out_words) == ["TERMINAR"]
    contact = new_id("contact")
    assert text(stub, loc, contact, "Terminar").action == OPTED_OUT
    assert text(stub, loc, contact, "volver").action == OPTED_IN


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"languages": ["de"]}, "languages[0]"),
        ({"default_language": "fr"}, "default_language"),
        (
            {"language_words": [pb.LanguageKeywords(language="fr", opt_in_words=["parar"])]},
            "language_words[0].opt_in_words",
        ),
        ({"extra_opt_in_words": ["ALTO YA"]}, "extra_opt_in_words"),
    ],
)
def test_keyword_settings_across_languages_are_validated(
    stub: Any, loc: str, fields: dict[str, Any], field: str
) -> None:
    request = pb.UpdateKeywordSettingsRequest(
        location_id=loc, settings=pb.KeywordSettings(**fields)
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.UpdateKeywordSettings(request, timeout=T)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_fields(refused.value)


def test_email_keywords_are_still_not_processed(stub: Any, loc: str, contact: str) -> None:
    configure(stub, loc)
    answer = stub.ProcessInboundMessage(factories.inbound(loc, contact, "STOP", EMAIL), timeout=T)
    assert answer.action == NONE and answer.reply_text == "" and not answer.changed


# --- the typed client ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_the_clients_configure_replies_and_languages(
    kind: str, server: ServerProcess, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        before = await dnd.get_compliance_replies(loc)
        assert not before.configured
        own = "{brand}: no more texts from us."
        updated = await dnd.update_compliance_replies(
            loc,
            brand_name=BRAND,
            support_contact=factories.SUPPORT,
            texts=[reply_texts("en", opt_out_confirmation=own)],
        )
        assert updated.configured and updated.texts[0].opt_out_confirmation == own
        settings = await dnd.update_keyword_settings(
            loc,
            languages=["es"],
            language_words=[language_keywords("es", opt_out_words=["terminar"])],
            share_rcs_sms_opt_outs=True,
        )
        assert list(settings.languages) == ["es"] and settings.share_rcs_sms_opt_outs
        out = await dnd.process_inbound_message(
            loc, "c1", "Terminar", channel=Channel.RCS, from_address=PHONE
        )
        assert out.reply_language == "es" and out.reply_text.startswith(f"{BRAND}: Baja")
        assert list(out.status.blocked_channels) == [SMS, RCS]
        mine = await dnd.process_inbound_message(loc, "c2", "stop", from_address=PHONE)
        assert mine.reply_text == f"{BRAND}: no more texts from us."
