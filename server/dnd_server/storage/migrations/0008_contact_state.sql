-- A contact's whole active state in its own row, beside its version: a read of a contact is one
-- primary-key lookup, a write one update of the row (and the change-log insert). dnd_blocks and
-- dnd_consents stay, written by the same statement, for listing and export.

-- {"blocks": [...], "consents": [...]}, a key left out when it has nothing: each block as the
-- columns of dnd_blocks by name (location and contact aside), each consent as the document the
-- change log keeps of it (the columns of dnd_consents by name, location, contact and
-- updated_at aside). Times in ISO 8601.
ALTER TABLE dnd_contacts ADD COLUMN state jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(state) = 'object');

-- A contact's state built from dnd_blocks and dnd_consents (times in UTC). For this backfill,
-- and to rebuild the state after editing those tables by hand.
CREATE FUNCTION dnd_contact_state(location text, contact text) RETURNS jsonb
LANGUAGE sql STABLE
SET timezone = 'UTC'
AS $$
SELECT coalesce(
           (SELECT jsonb_build_object('blocks', jsonb_agg(
                       jsonb_build_object(
                           'direction', b.direction, 'scope', b.scope, 'reason', b.reason,
                           'source', b.source, 'actor_id', b.actor_id, 'note', b.note,
                           'evidence', b.evidence, 'provider_detail', b.provider_detail,
                           'since', b.since, 'address', b.address, 'replied_at', b.replied_at)
                       ORDER BY b.since, b.direction, b.scope, b.reason))
            FROM dnd_blocks b
            WHERE b.location_id = location AND b.contact_id = contact
            HAVING count(*) > 0),
           '{}')
    || coalesce(
           (SELECT jsonb_build_object('consents', jsonb_agg(
                       to_jsonb(k) - 'location_id' - 'contact_id' - 'updated_at'
                       ORDER BY k.channel, k.purpose, k.address))
            FROM dnd_consents k
            WHERE k.location_id = location AND k.contact_id = contact
            HAVING count(*) > 0),
           '{}')
$$;

UPDATE dnd_contacts c
SET state = dnd_contact_state(c.location_id, c.contact_id)
WHERE EXISTS (SELECT 1 FROM dnd_blocks b
              WHERE b.location_id = c.location_id AND b.contact_id = c.contact_id)
   OR EXISTS (SELECT 1 FROM dnd_consents k
              WHERE k.location_id = c.location_id AND k.contact_id = c.contact_id);
