-- ensure_contact --
INSERT INTO dnd_contacts (location_id, contact_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING

-- lock_contact --
SELECT version, updated_at, last_seq, now() AS now FROM dnd_contacts
WHERE location_id = $1 AND contact_id = $2
FOR UPDATE

-- get_contact --
SELECT version, updated_at, last_seq FROM dnd_contacts
WHERE location_id = $1 AND contact_id = $2

-- get_blocks --
SELECT direction, scope, reason, source, actor_id, note, evidence, provider_detail, since
FROM dnd_blocks
WHERE location_id = $1 AND contact_id = $2

-- insert_block --
INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason, source, actor_id,
                        note, evidence, provider_detail, since)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)

-- delete_block --
DELETE FROM dnd_blocks
WHERE location_id = $1 AND contact_id = $2 AND direction = $3 AND scope = $4 AND reason = $5

-- append_changes --
-- Runs last in a writing transaction: it takes the log head's row lock until commit, so
-- sequence numbers commit in order.
WITH head AS (
    UPDATE dnd_log_head SET seq = seq + cardinality($3::bigint[]) RETURNING seq
), rows AS (
    INSERT INTO dnd_changes (seq, location_id, contact_id, direction, scope, enabled, reason,
                             source, actor_id, note, evidence, provider_detail, version,
                             outbound, inbound, blocked_channels, created_at)
    SELECT head.seq - cardinality($3::bigint[]) + c.ord, $1, $2, c.direction, c.scope,
           c.enabled, c.reason, $11, $12, $13, $14, $15, c.version,
           c.outbound, c.inbound, string_to_array(c.blocked, ','), $16
    FROM head,
         unnest($3::bigint[], $4::text[], $5::text[], $6::boolean[], $7::text[], $8::text[],
                $9::text[], $10::text[])
             WITH ORDINALITY AS c(version, direction, scope, enabled, reason, outbound,
                                  inbound, blocked, ord)
    RETURNING seq
)
UPDATE dnd_contacts
SET version = $17, updated_at = $16, last_seq = (SELECT max(seq) FROM rows)
WHERE location_id = $1 AND contact_id = $2
RETURNING last_seq

-- head_seq --
SELECT seq FROM dnd_log_head

-- ping --
SELECT 1
