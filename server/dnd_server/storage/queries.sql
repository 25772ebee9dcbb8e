-- ensure_contact --
INSERT INTO dnd_contacts (location_id, contact_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING

-- lock_contact --
SELECT version, updated_at, last_seq, now() AS now FROM dnd_contacts
WHERE location_id = $1 AND contact_id = $2
FOR UPDATE

-- read_contacts --
-- One snapshot, one round trip: the contacts, their blocks and consents (each consent as the
-- document the change log keeps: its columns by name) and the addresses' suppressions.
SELECT 'c' AS kind, c.contact_id, c.version, c.updated_at, c.last_seq,
       NULL::text AS direction, NULL::text AS scope, NULL::text AS reason, NULL::text AS source,
       NULL::text AS actor_id, NULL::text AS note, NULL::text AS evidence,
       NULL::text AS provider_detail, NULL::timestamptz AS since, NULL::text AS address,
       NULL::timestamptz AS replied_at, NULL::jsonb AS consent
FROM dnd_contacts c
WHERE c.location_id = $1 AND c.contact_id = ANY($2::text[])
UNION ALL
SELECT 'b', b.contact_id, NULL, NULL, NULL, b.direction, b.scope, b.reason, b.source,
       b.actor_id, b.note, b.evidence, b.provider_detail, b.since, b.address, b.replied_at,
       NULL
FROM dnd_blocks b
WHERE b.location_id = $1 AND b.contact_id = ANY($2::text[])
UNION ALL
SELECT 'k', k.contact_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, to_jsonb(k) - 'location_id' - 'contact_id' - 'updated_at'
FROM dnd_consents k
WHERE k.location_id = $1 AND k.contact_id = ANY($2::text[])
UNION ALL
SELECT 's', s.contact_id, NULL, NULL, NULL, 'OUTBOUND', s.channel, s.reason, s.source,
       s.actor_id, s.note, s.evidence, s.provider_detail, s.since, s.address, NULL, NULL
FROM dnd_address_suppressions s
JOIN unnest($3::text[], $4::text[]) AS a(channel, address)
  ON s.channel = a.channel AND s.address = a.address
WHERE s.location_id = $1

-- read_contact --
-- The common case of read_contacts: one contact, no address.
SELECT 'c' AS kind, c.contact_id, c.version, c.updated_at, c.last_seq,
       NULL::text AS direction, NULL::text AS scope, NULL::text AS reason, NULL::text AS source,
       NULL::text AS actor_id, NULL::text AS note, NULL::text AS evidence,
       NULL::text AS provider_detail, NULL::timestamptz AS since, NULL::text AS address,
       NULL::timestamptz AS replied_at, NULL::jsonb AS consent
FROM dnd_contacts c
WHERE c.location_id = $1 AND c.contact_id = $2
UNION ALL
SELECT 'b', b.contact_id, NULL, NULL, NULL, b.direction, b.scope, b.reason, b.source,
       b.actor_id, b.note, b.evidence, b.provider_detail, b.since, b.address, b.replied_at,
       NULL
FROM dnd_blocks b
WHERE b.location_id = $1 AND b.contact_id = $2
UNION ALL
SELECT 'k', k.contact_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, to_jsonb(k) - 'location_id' - 'contact_id' - 'updated_at'
FROM dnd_consents k
WHERE k.location_id = $1 AND k.contact_id = $2

-- get_blocks --
SELECT direction, scope, reason, source, actor_id, note, evidence, provider_detail, since,
       address, replied_at
FROM dnd_blocks
WHERE location_id = $1 AND contact_id = $2

-- insert_block --
INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason, source, actor_id,
                        note, evidence, provider_detail, since, address)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)

-- delete_block --
DELETE FROM dnd_blocks
WHERE location_id = $1 AND contact_id = $2 AND direction = $3 AND scope = $4 AND reason = $5

-- claim_reply --
-- The opt-out's one compliance reply allowed at $6 (the contact is locked).
UPDATE dnd_blocks SET replied_at = $6
WHERE location_id = $1 AND contact_id = $2 AND direction = $3 AND scope = $4 AND reason = $5
  AND replied_at IS NULL

-- append_changes --
-- Runs last in a writing transaction: it takes the log head's row lock until commit, so
-- sequence numbers commit in order.
WITH head AS (
    UPDATE dnd_log_head SET seq = seq + cardinality($3::bigint[]) RETURNING seq
), rows AS (
    INSERT INTO dnd_changes (seq, location_id, contact_id, direction, scope, enabled, reason,
                             source, actor_id, note, evidence, provider_detail, version,
                             outbound, inbound, blocked_channels, created_at, address,
                             owner_contact_id, caller, kind, consent)
    SELECT head.seq - cardinality($3::bigint[]) + c.ord, $1, $2, c.direction, c.scope,
           c.enabled, c.reason, $11, $12, $13, $14, $15, c.version,
           c.outbound, c.inbound, string_to_array(c.blocked, ','), $16, c.address,
           c.owner_contact_id, $20, c.kind, c.consent::jsonb
    FROM head,
         unnest($3::bigint[], $4::text[], $5::text[], $6::boolean[], $7::text[], $8::text[],
                $9::text[], $10::text[], $18::text[], $19::text[], $21::text[], $22::text[])
             WITH ORDINALITY AS c(version, direction, scope, enabled, reason, outbound,
                                  inbound, blocked, address, owner_contact_id, kind, consent,
                                  ord)
    RETURNING seq
)
UPDATE dnd_contacts
SET version = $17, updated_at = $16, last_seq = (SELECT max(seq) FROM rows)
WHERE location_id = $1 AND contact_id = $2
RETURNING last_seq, pg_notify('dnd_changes', last_seq::text)

-- lock_addresses --
-- Serialises writers touching the same addresses (any contact), in one global order.
SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || a.channel || chr(31) || a.address, 0))
FROM unnest($2::text[], $3::text[]) AS a(channel, address)
ORDER BY a.channel, a.address

-- get_suppressions --
SELECT s.channel, s.address, s.reason, s.source, s.contact_id, s.actor_id, s.note, s.evidence,
       s.provider_detail, s.since
FROM dnd_address_suppressions s
JOIN unnest($2::text[], $3::text[]) AS a(channel, address)
  ON s.channel = a.channel AND s.address = a.address
WHERE s.location_id = $1

-- insert_suppression --
INSERT INTO dnd_address_suppressions (location_id, channel, address, reason, source, contact_id,
                                      actor_id, note, evidence, provider_detail, since)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)

-- delete_suppression --
DELETE FROM dnd_address_suppressions
WHERE location_id = $1 AND channel = $2 AND address = $3 AND reason = $4

-- claim_idempotency_key --
-- Returns a row when the key is now ours (new, or its previous use expired); waits for a
-- concurrent transaction holding the same key and then returns nothing.
INSERT INTO dnd_idempotency AS i (location_id, key, method, request_hash, response, created_at)
VALUES ($1, $2, $3, $4, NULL, now())
ON CONFLICT (location_id, key) DO UPDATE
SET method = EXCLUDED.method, request_hash = EXCLUDED.request_hash, response = NULL,
    created_at = EXCLUDED.created_at
WHERE i.created_at < now() - make_interval(secs => $5)
RETURNING 1

-- get_idempotency_key --
SELECT method, request_hash, response FROM dnd_idempotency WHERE location_id = $1 AND key = $2

-- store_idempotent_response --
UPDATE dnd_idempotency SET response = $3 WHERE location_id = $1 AND key = $2

-- prune_idempotency_keys --
DELETE FROM dnd_idempotency WHERE created_at < now() - make_interval(secs => $1)

-- list_history --
-- A contact's history before sequence $3, newest first: its own changes, and the changes of
-- the suppressions its events set made through other contacts.
(SELECT seq, created_at, version, enabled, direction, scope, reason, source, actor_id, note,
        evidence, provider_detail, address, contact_id, owner_contact_id, caller, kind,
        consent
 FROM dnd_changes
 WHERE location_id = $1 AND contact_id = $2 AND seq < $3
 ORDER BY seq DESC
 LIMIT $4)
UNION ALL
(SELECT seq, created_at, version, enabled, direction, scope, reason, source, actor_id, note,
        evidence, provider_detail, address, contact_id, owner_contact_id, caller, kind,
        consent
 FROM dnd_changes
 WHERE location_id = $1 AND owner_contact_id = $2 AND owner_contact_id <> ''
   AND contact_id <> $2 AND seq < $3
 ORDER BY seq DESC
 LIMIT $4)
ORDER BY seq DESC
LIMIT $4

-- list_address_history --
-- An address's history before sequence $4, newest first: every change of its suppressions on
-- channel $2, whichever contact made it.
SELECT seq, created_at, version, enabled, direction, scope, reason, source, actor_id, note,
       evidence, provider_detail, address, contact_id, owner_contact_id, caller, kind, consent
FROM dnd_changes
WHERE location_id = $1 AND scope = $2 AND address = $3 AND address <> '' AND seq < $4
ORDER BY seq DESC
LIMIT $5

-- get_settings --
SELECT extra_opt_out_words, extra_opt_in_words, detect_revocation_phrases
FROM dnd_location_settings WHERE location_id = $1

-- put_settings --
INSERT INTO dnd_location_settings (location_id, extra_opt_out_words, extra_opt_in_words,
                                   detect_revocation_phrases, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (location_id) DO UPDATE
SET extra_opt_out_words = EXCLUDED.extra_opt_out_words,
    extra_opt_in_words = EXCLUDED.extra_opt_in_words,
    detect_revocation_phrases = EXCLUDED.detect_revocation_phrases,
    updated_at = now()

-- changes_after --
SELECT seq, location_id, contact_id, direction, scope, enabled, reason, source, actor_id,
       created_at, outbound, inbound, blocked_channels, version, address, owner_contact_id,
       caller, kind, consent
FROM dnd_changes
WHERE seq > $1
ORDER BY seq
LIMIT $2

-- cursor_position --
-- The log's head and prune horizon, and whether the change right after the cursor is older
-- than the stream's retention window.
SELECT h.seq AS head, h.pruned_below,
       (SELECT c.created_at < now() - make_interval(secs => $2)
        FROM dnd_changes c WHERE c.seq > $1 ORDER BY c.seq LIMIT 1) AS next_expired
FROM dnd_log_head h

-- prune_changes --
-- Deletes the oldest changes, a contiguous prefix of the log, and moves the horizon.
WITH keep AS (
    SELECT coalesce(
        (SELECT min(seq) FROM dnd_changes
         WHERE created_at >= now() - make_interval(secs => $1)),
        (SELECT seq + 1 FROM dnd_log_head)
    ) AS keep_from
), gone AS (
    DELETE FROM dnd_changes WHERE seq < (SELECT keep_from FROM keep) RETURNING seq
)
UPDATE dnd_log_head
SET pruned_below = greatest(pruned_below, (SELECT keep_from FROM keep))
RETURNING (SELECT count(*) FROM gone)

-- head_seq --
SELECT seq FROM dnd_log_head

-- store_cursor_key --
-- The first server to start keeps its candidate; every later one keeps the stored key.
INSERT INTO dnd_cursor_key (key) VALUES ($1) ON CONFLICT DO NOTHING

-- cursor_key --
SELECT key FROM dnd_cursor_key

-- get_consents --
SELECT to_jsonb(k) - 'location_id' - 'contact_id' - 'updated_at' AS consent
FROM dnd_consents k
WHERE k.location_id = $1 AND k.contact_id = $2

-- upsert_consent --
-- Record, replace, confirm or revoke: the consent of its key as it stands after the change.
INSERT INTO dnd_consents (location_id, contact_id, channel, purpose, address, method, kind,
                          status, captured_at, source, actor_id, evidence, expires_at,
                          confirm_by, revoked_at, revoked_by, consent_source, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $16, $17, $18)
ON CONFLICT (location_id, contact_id, channel, purpose, address) DO UPDATE
SET method = EXCLUDED.method, kind = EXCLUDED.kind, status = EXCLUDED.status,
    captured_at = EXCLUDED.captured_at, source = EXCLUDED.source,
    actor_id = EXCLUDED.actor_id, evidence = EXCLUDED.evidence,
    expires_at = EXCLUDED.expires_at, confirm_by = EXCLUDED.confirm_by,
    revoked_at = EXCLUDED.revoked_at, revoked_by = EXCLUDED.revoked_by,
    consent_source = EXCLUDED.consent_source, updated_at = EXCLUDED.updated_at

-- get_consent_policy --
-- The location's channels that require consent (none: a row of NULLs) and its double opt-in
-- window (NULL: the default).
SELECT p.channel, p.require_marketing, p.require_informational,
       s.double_opt_in_window_seconds AS window_seconds
FROM (SELECT $1::text AS location_id) l
LEFT JOIN dnd_location_settings s ON s.location_id = l.location_id
LEFT JOIN dnd_consent_policy p ON p.location_id = l.location_id
ORDER BY p.channel

-- delete_consent_policy --
DELETE FROM dnd_consent_policy WHERE location_id = $1

-- insert_consent_policy --
INSERT INTO dnd_consent_policy (location_id, channel, require_marketing, require_informational)
SELECT $1, p.channel, p.marketing, p.informational
FROM unnest($2::text[], $3::boolean[], $4::boolean[]) AS p(channel, marketing, informational)

-- put_double_opt_in_window --
INSERT INTO dnd_location_settings (location_id, double_opt_in_window_seconds, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (location_id) DO UPDATE
SET double_opt_in_window_seconds = EXCLUDED.double_opt_in_window_seconds, updated_at = now()
