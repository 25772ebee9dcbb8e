"""The personal data of stored answers, cleared for an erasure: a stored idempotent answer is
read back, every field that describes or identifies a person cleared (at any depth), and
written again, so a retry after the erasure replays the answer without it."""

from __future__ import annotations

from collections.abc import Iterator

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

_SERVICE = pb.DESCRIPTOR.services_by_name["DndService"]

# Text fields that hold personal data in any answer: who said what, the proof, the addresses,
# and explanations, subjects and descriptions (which may name an address or a contact, as a
# bulk item's refusal does).
PERSONAL_FIELDS = frozenset(
    {
        "actor_id",
        "note",
        "evidence",
        "provider_detail",
        "address",
        "explanation",
        "consent_source",
        "matched_keyword",
        "subject",
        "description",
    }
)
# Messages cleared whole wherever they appear.
PERSONAL_MESSAGES = frozenset({"dnd.v1.ConsentEvidence"})


def scrub_answer(method: str, answer: bytes) -> bytes:
    """``answer`` (the stored response of ``method``) without personal data; unchanged when
    it holds none, or when it is no answer of a known method (it is then left alone)."""
    rpc = _SERVICE.methods_by_name.get(method)
    if rpc is None:
        return answer
    cls = getattr(pb, rpc.output_type.name, None)
    if cls is None:
        return answer
    try:
        message = cls.FromString(answer)
    except DecodeError:
        return answer
    if not scrub(message):
        return answer
    return bytes(message.SerializeToString(deterministic=True))


def scrub(message: Message) -> bool:
    """Clear ``message``'s personal fields in place; whether anything was cleared."""
    cleared = False
    for each in messages(message):
        for field, _ in each.ListFields():
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                kind = field.message_type
                if kind is not None and kind.full_name in PERSONAL_MESSAGES:
                    each.ClearField(field.name)
                    cleared = True
            elif field.name in PERSONAL_FIELDS and field.type == FieldDescriptor.TYPE_STRING:
                each.ClearField(field.name)
                cleared = True
    return cleared


def messages(message: Message) -> Iterator[Message]:
    """``message`` and every message inside it, each before its own fields are looked at:
    a field the caller clears in one is not entered."""
    yield message
    for field, value in message.ListFields():
        kind = field.message_type
        if (
            field.type != FieldDescriptor.TYPE_MESSAGE
            or kind is None
            or kind.GetOptions().map_entry
        ):
            continue
        for item in value if field.is_repeated else (value,):
            yield from messages(item)
