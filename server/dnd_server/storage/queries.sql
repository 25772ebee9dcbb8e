-- ensure_contact --
INSERT INTO dnd_contacts (location_id, contact_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING

-- lock_contact --
-- A write's first statement: the contact's row locked until commit (created when it has none)
-- and its state. No row: a concurrent writer created it after this statement's snapshot
-- (lock_contact_row then locks it).
WITH locked AS (
    SELECT version, updated_at, last_seq, state FROM dnd_contacts
    WHERE location_id = $1 AND contact_id = $2
    FOR UPDATE
), created AS (
    INSERT INTO dnd_contacts (location_id, contact_id)
    SELECT $1, $2 WHERE NOT EXISTS (SELECT FROM locked)
    ON CONFLICT DO NOTHING
    RETURNING version, updated_at, last_seq, state
)
SELECT version, updated_at, last_seq, state, now() AS now FROM locked
UNION ALL
SELECT version, updated_at, last_seq, state, now() FROM created

-- lock_contact_row --
SELECT version, updated_at, last_seq, state, now() AS now FROM dnd_contacts
WHERE location_id = $1 AND contact_id = $2
FOR UPDATE

-- read_contact --
-- One contact's row (its state document holds its blocks and consents): one primary-key
-- lookup.
SELECT contact_id, version, updated_at, last_seq, state FROM dnd_contacts
WHERE location_id = $1 AND contact_id = $2

-- read_contact_batch --
-- Several contacts' rows.
SELECT contact_id, version, updated_at, last_seq, state FROM dnd_contacts
WHERE location_id = $1 AND contact_id = ANY($2::text[])

-- read_contacts --
-- One snapshot, one round trip: the contacts' rows (kind c) and the suppressions of the
-- addresses $3 (channels), $4 (kind s; contact_id: the contact whose event set it).
SELECT 'c' AS kind, c.contact_id, c.version, c.updated_at, c.last_seq, c.state,
       NULL::text AS channel, NULL::text AS address, NULL::text AS reason,
       NULL::text AS source, NULL::text AS actor_id, NULL::text AS note,
       NULL::text AS evidence, NULL::text AS provider_detail, NULL::timestamptz AS since
FROM dnd_contacts c
WHERE c.location_id = $1 AND c.contact_id = ANY($2::text[])
UNION ALL
SELECT 's', s.contact_id, NULL, NULL, NULL, NULL, s.channel, s.address, s.reason, s.source,
       s.actor_id, s.note, s.evidence, s.provider_detail, s.since
FROM dnd_address_suppressions s
JOIN unnest($3::text[], $4::text[]) AS a(channel, address)
  ON s.channel = a.channel AND s.address = a.address
WHERE s.location_id = $1

-- get_blocks --
SELECT direction, scope, reason, source, actor_id, note, evidence, provider_detail, since,
       address, replied_at
FROM dnd_blocks
WHERE location_id = $1 AND contact_id = $2

-- insert_block --
INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason, source, actor_id,
                        note, evidence, provider_detail, since, address)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)

-- insert_blocks --
-- insert_block of several blocks in one statement: its parameters as arrays, one element per
-- block.
INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason, source, actor_id,
                        note, evidence, provider_detail, since, address)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
                     $12::text[])

-- delete_block --
DELETE FROM dnd_blocks
WHERE location_id = $1 AND contact_id = $2 AND direction = $3 AND scope = $4 AND reason = $5

-- claim_reply --
-- The opt-out's one compliance reply allowed at $6 (the contact is locked).
UPDATE dnd_blocks SET replied_at = $6
WHERE location_id = $1 AND contact_id = $2 AND direction = $3 AND scope = $4 AND reason = $5
  AND replied_at IS NULL

-- append_changes --
-- Runs last in a writing transaction: it takes the row lock of the head of lane $23 (the
-- location's) until commit, so the lane's sequence numbers commit in order; writes of other
-- lanes never wait for it. Each row also keeps every lane's head as this statement saw it
-- (committed, no lock taken): the change's position in the whole log.
-- First the contact's rows of dnd_blocks and dnd_consents become what its new state document
-- ($24) holds (only the rows that differ are written), and the address suppressions change as
-- $25 says ({"gone": [key, ...], "put": [suppression, ...]}, each by column name).
WITH blocks AS (
    SELECT n.* FROM jsonb_to_recordset(coalesce($24::jsonb -> 'blocks', '[]'))
        AS n(direction text, scope text, reason text, source text, actor_id text, note text,
             evidence text, provider_detail text, since timestamptz, address text,
             replied_at timestamptz)
), blocks_gone AS (
    DELETE FROM dnd_blocks x
    WHERE x.location_id = $1 AND x.contact_id = $2
      AND NOT EXISTS (SELECT FROM blocks n
                      WHERE (n.direction, n.scope, n.reason) = (x.direction, x.scope, x.reason))
), blocks_put AS (
    INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason, source, actor_id,
                            note, evidence, provider_detail, since, address, replied_at)
    SELECT $1, $2, n.direction, n.scope, n.reason, n.source, coalesce(n.actor_id, ''),
           coalesce(n.note, ''), coalesce(n.evidence, ''), coalesce(n.provider_detail, ''),
           n.since, coalesce(n.address, ''), n.replied_at
    FROM blocks n
    WHERE NOT EXISTS (
        SELECT FROM dnd_blocks o
        WHERE o.location_id = $1 AND o.contact_id = $2
          AND (o.direction, o.scope, o.reason) = (n.direction, n.scope, n.reason)
          AND (o.source, o.actor_id, o.note, o.evidence, o.provider_detail, o.since, o.address,
               o.replied_at)
              IS NOT DISTINCT FROM
              (n.source, coalesce(n.actor_id, ''), coalesce(n.note, ''),
               coalesce(n.evidence, ''), coalesce(n.provider_detail, ''), n.since,
               coalesce(n.address, ''), n.replied_at))
    ON CONFLICT (location_id, contact_id, direction, scope, reason) DO UPDATE
    SET source = EXCLUDED.source, actor_id = EXCLUDED.actor_id, note = EXCLUDED.note,
        evidence = EXCLUDED.evidence, provider_detail = EXCLUDED.provider_detail,
        since = EXCLUDED.since, address = EXCLUDED.address, replied_at = EXCLUDED.replied_at
), consents_put AS (
    INSERT INTO dnd_consents (location_id, contact_id, channel, purpose, address, method, kind,
                              status, captured_at, source, actor_id, evidence, expires_at,
                              confirm_by, revoked_at, revoked_by, consent_source, updated_at)
    SELECT $1, $2, n.channel, n.purpose, coalesce(n.address, ''), n.method, n.kind, n.status,
           n.captured_at, n.source, coalesce(n.actor_id, ''), coalesce(n.evidence, '{}'),
           n.expires_at, n.confirm_by, n.revoked_at, coalesce(n.revoked_by, ''),
           coalesce(n.consent_source, ''), $16
    FROM jsonb_to_recordset(coalesce($24::jsonb -> 'consents', '[]'))
        AS n(channel text, purpose text, address text, method text, kind text, status text,
             captured_at timestamptz, source text, actor_id text, evidence jsonb,
             expires_at timestamptz, confirm_by timestamptz, revoked_at timestamptz,
             revoked_by text, consent_source text)
    WHERE NOT EXISTS (
        SELECT FROM dnd_consents o
        WHERE o.location_id = $1 AND o.contact_id = $2
          AND (o.channel, o.purpose, o.address) = (n.channel, n.purpose, coalesce(n.address, ''))
          AND (o.method, o.kind, o.status, o.captured_at, o.source, o.actor_id, o.evidence,
               o.expires_at, o.confirm_by, o.revoked_at, o.revoked_by, o.consent_source)
              IS NOT DISTINCT FROM
              (n.method, n.kind, n.status, n.captured_at, n.source, coalesce(n.actor_id, ''),
               coalesce(n.evidence, '{}'), n.expires_at, n.confirm_by, n.revoked_at,
               coalesce(n.revoked_by, ''), coalesce(n.consent_source, '')))
    ON CONFLICT (location_id, contact_id, channel, purpose, address) DO UPDATE
    SET method = EXCLUDED.method, kind = EXCLUDED.kind, status = EXCLUDED.status,
        captured_at = EXCLUDED.captured_at, source = EXCLUDED.source,
        actor_id = EXCLUDED.actor_id, evidence = EXCLUDED.evidence,
        expires_at = EXCLUDED.expires_at, confirm_by = EXCLUDED.confirm_by,
        revoked_at = EXCLUDED.revoked_at, revoked_by = EXCLUDED.revoked_by,
        consent_source = EXCLUDED.consent_source, updated_at = EXCLUDED.updated_at
), suppressions_gone AS (
    DELETE FROM dnd_address_suppressions s
    USING jsonb_to_recordset(coalesce($25::jsonb -> 'gone', '[]'))
        AS g(channel text, address text, reason text)
    WHERE s.location_id = $1 AND s.channel = g.channel AND s.address = g.address
      AND s.reason = g.reason
), suppressions_put AS (
    INSERT INTO dnd_address_suppressions (location_id, channel, address, reason, source,
                                          contact_id, actor_id, note, evidence,
                                          provider_detail, since)
    SELECT $1, p.channel, p.address, p.reason, p.source, p.contact_id, p.actor_id, p.note,
           p.evidence, p.provider_detail, p.since
    FROM jsonb_to_recordset(coalesce($25::jsonb -> 'put', '[]'))
        AS p(channel text, address text, reason text, source text, contact_id text,
             actor_id text, note text, evidence text, provider_detail text, since timestamptz)
    ON CONFLICT (location_id, channel, address, reason) DO UPDATE
    SET source = EXCLUDED.source, contact_id = EXCLUDED.contact_id,
        actor_id = EXCLUDED.actor_id, note = EXCLUDED.note, evidence = EXCLUDED.evidence,
        provider_detail = EXCLUDED.provider_detail, since = EXCLUDED.since
), head AS (
    UPDATE dnd_log_lanes SET seq = seq + cardinality($3::bigint[]) WHERE lane = $23
    RETURNING seq
), seen AS (
    SELECT array_agg(seq ORDER BY lane) AS heads FROM dnd_log_lanes
), rows AS (
    INSERT INTO dnd_changes (lane, seq, heads, location_id, contact_id, direction, scope,
                             enabled, reason, source, actor_id, note, evidence,
                             provider_detail, version, outbound, inbound, blocked_channels,
                             created_at, address, owner_contact_id, caller, kind, consent)
    SELECT $23, head.seq - cardinality($3::bigint[]) + c.ord, seen.heads, $1, $2,
           c.direction, c.scope, c.enabled, c.reason, $11, $12, $13, $14, $15, c.version,
           c.outbound, c.inbound, string_to_array(c.blocked, ','), $16, c.address,
           c.owner_contact_id, $20, c.kind, c.consent::jsonb
    FROM head, seen,
         unnest($3::bigint[], $4::text[], $5::text[], $6::boolean[], $7::text[], $8::text[],
                $9::text[], $10::text[], $18::text[], $19::text[], $21::text[], $22::text[])
             WITH ORDINALITY AS c(version, direction, scope, enabled, reason, outbound,
                                  inbound, blocked, address, owner_contact_id, kind, consent,
                                  ord)
    RETURNING seq
)
-- The contact moves to its new version, state and last change.
UPDATE dnd_contacts
SET version = $17, updated_at = $16, last_seq = (SELECT max(seq) FROM rows), state = $24::jsonb
WHERE location_id = $1 AND contact_id = $2
RETURNING last_seq, (SELECT heads FROM seen) AS heads

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
-- A suppression, or (set again by a second contact's event) its row replaced.
INSERT INTO dnd_address_suppressions (location_id, channel, address, reason, source, contact_id,
                                      actor_id, note, evidence, provider_detail, since)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (location_id, channel, address, reason) DO UPDATE
SET source = EXCLUDED.source, contact_id = EXCLUDED.contact_id, actor_id = EXCLUDED.actor_id,
    note = EXCLUDED.note, evidence = EXCLUDED.evidence,
    provider_detail = EXCLUDED.provider_detail, since = EXCLUDED.since

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

-- store_contact_answer --
-- A single contact's write keeps its answer with the contact it is about (an erasure scrubs it).
UPDATE dnd_idempotency SET response = $3, contact_id = $4 WHERE location_id = $1 AND key = $2

-- prune_idempotency_keys --
DELETE FROM dnd_idempotency WHERE created_at < now() - make_interval(secs => $1)

-- list_history --
-- A contact's history before sequence $3, newest first: its own changes, and the changes of
-- the suppressions its events set made through other contacts.
(SELECT seq, created_at, version, enabled, direction, scope, reason, source, actor_id, note,
        evidence, provider_detail, address, contact_id, owner_contact_id, caller, kind,
        consent, lane, heads
 FROM dnd_changes
 WHERE location_id = $1 AND contact_id = $2 AND seq < $3
 ORDER BY seq DESC
 LIMIT $4)
UNION ALL
(SELECT seq, created_at, version, enabled, direction, scope, reason, source, actor_id, note,
        evidence, provider_detail, address, contact_id, owner_contact_id, caller, kind,
        consent, lane, heads
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
       evidence, provider_detail, address, contact_id, owner_contact_id, caller, kind, consent,
       lane, heads
FROM dnd_changes
WHERE location_id = $1 AND scope = $2 AND address = $3 AND address <> '' AND seq < $4
ORDER BY seq DESC
LIMIT $5

-- get_settings --
SELECT extra_opt_out_words, extra_opt_in_words, detect_revocation_phrases, languages,
       default_language, language_words, share_rcs_sms_opt_outs
FROM dnd_location_settings WHERE location_id = $1

-- put_settings --
INSERT INTO dnd_location_settings (location_id, extra_opt_out_words, extra_opt_in_words,
                                   detect_revocation_phrases, languages, default_language,
                                   language_words, share_rcs_sms_opt_outs, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, now())
ON CONFLICT (location_id) DO UPDATE
SET extra_opt_out_words = EXCLUDED.extra_opt_out_words,
    extra_opt_in_words = EXCLUDED.extra_opt_in_words,
    detect_revocation_phrases = EXCLUDED.detect_revocation_phrases,
    languages = EXCLUDED.languages,
    default_language = EXCLUDED.default_language,
    language_words = EXCLUDED.language_words,
    share_rcs_sms_opt_outs = EXCLUDED.share_rcs_sms_opt_outs,
    updated_at = now()

-- get_compliance_replies --
SELECT brand_name, support_contact, texts::text AS texts
FROM dnd_compliance_replies WHERE location_id = $1

-- put_compliance_replies --
INSERT INTO dnd_compliance_replies (location_id, brand_name, support_contact, texts, updated_at)
VALUES ($1, $2, $3, $4::jsonb, now())
ON CONFLICT (location_id) DO UPDATE
SET brand_name = EXCLUDED.brand_name,
    support_contact = EXCLUDED.support_contact,
    texts = EXCLUDED.texts,
    updated_at = now()

-- get_reply_marks --
-- The contact's last compliance replies due per channel (the contact is locked).
SELECT channel, kind, last_at FROM dnd_reply_marks WHERE location_id = $1 AND contact_id = $2

-- put_reply_mark --
INSERT INTO dnd_reply_marks (location_id, contact_id, channel, kind, last_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (location_id, contact_id, channel, kind) DO UPDATE SET last_at = EXCLUDED.last_at

-- changes_after --
-- The changes of lanes $1 after the positions $2 (one per lane), up to $3 per lane, each
-- lane in sequence order. A lane's numbers commit in order: nothing is skipped that commits
-- later.
SELECT c.lane, c.seq, c.heads, c.location_id, c.contact_id, c.direction, c.scope, c.enabled,
       c.reason, c.source, c.actor_id, c.created_at, c.outbound, c.inbound,
       c.blocked_channels, c.version, c.address, c.owner_contact_id, c.caller, c.kind,
       c.consent
FROM unnest($1::integer[], $2::bigint[]) AS p(lane, after)
CROSS JOIN LATERAL (
    SELECT * FROM dnd_changes c
    WHERE c.lane = p.lane AND c.seq > p.after
    ORDER BY c.seq
    LIMIT $3
) c
ORDER BY c.lane, c.seq

-- cursor_position --
-- For lanes $1 at the positions $2: each lane's head and prune horizon, and whether the
-- lane's change right after the position is older than the stream's retention window.
SELECT p.lane, l.seq AS head, h.pruned_below,
       (SELECT c.created_at < now() - make_interval(secs => $3)
        FROM dnd_changes c WHERE c.lane = p.lane AND c.seq > p.after
        ORDER BY c.seq LIMIT 1) AS next_expired
FROM unnest($1::integer[], $2::bigint[]) AS p(lane, after)
JOIN dnd_log_lanes l ON l.lane = p.lane
JOIN dnd_log_horizons h ON h.lane = p.lane

-- prune_changes --
-- Deletes the oldest changes of every lane, a contiguous prefix of each, and moves the
-- horizons of the lanes that lost changes past the last one deleted (never the heads
-- writers hold). A lane's numbers may have gaps (the single log's changes of other
-- locations): a position is expired only when a change above it was deleted.
WITH keep AS (
    SELECT l.lane,
           coalesce((SELECT min(c.seq) FROM dnd_changes c
                     WHERE c.lane = l.lane
                       AND c.created_at >= now() - make_interval(secs => $1)),
                    l.seq + 1) AS keep_from
    FROM dnd_log_lanes l
), gone AS (
    DELETE FROM dnd_changes c USING keep k
    WHERE c.lane = k.lane AND c.seq < k.keep_from
    RETURNING c.lane, c.seq
), moved AS (
    UPDATE dnd_log_horizons h
    SET pruned_below = greatest(h.pruned_below, g.top + 1)
    FROM (SELECT lane, max(seq) AS top FROM gone GROUP BY lane) g
    WHERE h.lane = g.lane
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM moved)

-- notify_changes --
-- Wakes the change feeds of every replica (LISTEN dnd_changes). Sent after writes commit, at
-- most one at a time per process: a NOTIFY inside a write would serialise every committing
-- write of the database on PostgreSQL's notification queue lock.
SELECT pg_notify('dnd_changes', '')

-- log_heads --
-- Every lane's head, in lane order.
SELECT array_agg(seq ORDER BY lane) FROM dnd_log_lanes

-- change_heads --
-- The position a change of lane $1 was written at (NULL: a change of the single log; no row:
-- pruned).
SELECT heads FROM dnd_changes WHERE lane = $1 AND seq = $2

-- log_layout --
SELECT lanes, legacy_head FROM dnd_log_layout FOR UPDATE

-- log_unwritten --
-- Whether the log never had a change: its layout may still change.
SELECT legacy_head = 0 AND (SELECT max(seq) FROM dnd_log_lanes) = 0
       AND NOT EXISTS (SELECT 1 FROM dnd_changes)
FROM dnd_log_layout

-- servers_following_the_log --
-- Other servers running on this database: each follows the log on a connection of its own
-- (the change feed's), opened once it has laid the log out; this one's is not open yet.
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'dnd-service-feed'

-- relayout_log --
-- A log that never had a change, laid out anew in $1 lanes (with clear_lanes first).
WITH heads AS (
    INSERT INTO dnd_log_lanes (lane, seq) SELECT g, 0 FROM generate_series(0, $1 - 1) AS g
), horizons AS (
    INSERT INTO dnd_log_horizons (lane, pruned_below)
    SELECT g, 1 FROM generate_series(0, $1 - 1) AS g
)
UPDATE dnd_log_layout SET lanes = $1

-- clear_lanes --
WITH heads AS (DELETE FROM dnd_log_lanes) DELETE FROM dnd_log_horizons

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

-- ensure_contacts --
-- The rows of several contacts of one location (sorted), created where missing.
INSERT INTO dnd_contacts (location_id, contact_id)
SELECT $1, c FROM unnest($2::text[]) AS c ORDER BY c
ON CONFLICT DO NOTHING

-- lock_contacts --
-- Several contacts of one location, locked in contact order.
SELECT contact_id, version, updated_at, last_seq, now() AS now FROM dnd_contacts
WHERE location_id = $1 AND contact_id = ANY($2::text[])
ORDER BY contact_id
FOR UPDATE

-- append_changes_many --
-- append_changes of several contacts of one location: every row in order ($2..: one element
-- per change), each contact moved to its last change's version and sequence number and to its
-- state document after the chunk ($23 contacts, $24 their documents). Runs last in its
-- transaction, like append_changes.
WITH head AS (
    UPDATE dnd_log_lanes SET seq = seq + cardinality($2::text[]) WHERE lane = $22
    RETURNING seq
), seen AS (
    SELECT array_agg(seq ORDER BY lane) AS heads FROM dnd_log_lanes
), rows AS (
    INSERT INTO dnd_changes (lane, heads, seq, location_id, contact_id, direction, scope,
                             enabled, reason, source, actor_id, note, evidence,
                             provider_detail, version, outbound, inbound, blocked_channels,
                             created_at, address, owner_contact_id, caller, kind, consent)
    SELECT $22, seen.heads, head.seq - cardinality($2::text[]) + c.ord, $1, c.contact_id,
           c.direction, c.scope,
           c.enabled, c.reason, c.source, c.actor_id, c.note, c.evidence, c.provider_detail,
           c.version, c.outbound, c.inbound, string_to_array(c.blocked, ','), $16, c.address,
           c.owner_contact_id, c.caller, c.kind, c.consent::jsonb
    FROM head, seen,
         unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::boolean[], $7::text[],
                $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
                $14::text[], $15::text[], $17::text[], $18::text[], $19::text[], $20::text[],
                $21::text[])
             WITH ORDINALITY AS c(contact_id, version, direction, scope, enabled, reason,
                                  outbound, inbound, blocked, source, actor_id, note, evidence,
                                  provider_detail, address, owner_contact_id, caller, kind,
                                  consent, ord)
    RETURNING seq, contact_id, version
), moved AS (
    UPDATE dnd_contacts d
    SET version = l.version, updated_at = $16, last_seq = l.seq, state = f.state::jsonb
    FROM (SELECT contact_id, max(version) AS version, max(seq) AS seq
          FROM rows GROUP BY contact_id) AS l
    JOIN unnest($23::text[], $24::text[]) AS f(contact_id, state) ON f.contact_id = l.contact_id
    WHERE d.location_id = $1 AND d.contact_id = l.contact_id
    RETURNING d.last_seq
)
SELECT (SELECT min(seq) FROM rows) AS first_seq, (SELECT heads FROM seen) AS heads,
       (SELECT max(last_seq) FROM moved) AS last_seq

-- list_blocks --
-- A keyset page of a location's blocks after the key ($2..$5; all '' for the first page),
-- matching the filters $6..$13 ('' or NULL: any), in primary-key order.
SELECT contact_id, direction, scope, reason, source, actor_id, note, evidence,
       provider_detail, since, address, replied_at
FROM dnd_blocks
WHERE location_id = $1
  -- The key after the location's equality (not the whole row with the location in it): the
  -- index scan then starts at the key instead of the location's first row.
  AND (contact_id, direction, scope, reason) > ($2, $3, $4, $5)
  AND ($6 = '' OR scope = $6)
  AND ($7 = '' OR direction = $7)
  AND ($8 = '' OR reason = $8)
  AND ($9 = '' OR source = $9)
  AND ($10::timestamptz IS NULL OR since >= $10)
  AND ($11::timestamptz IS NULL OR since < $11)
  AND ($12 = '' OR contact_id = $12)
  AND ($13 = '' OR address = $13)
ORDER BY location_id, contact_id, direction, scope, reason
LIMIT $14

-- list_suppressions --
-- A keyset page of a location's address suppressions after the key ($2..$4; all '' for the
-- first page), matching the filters $5..$12 ('' or NULL: any), in primary-key order.
SELECT channel, address, reason, source, contact_id, actor_id, note, evidence,
       provider_detail, since
FROM dnd_address_suppressions
WHERE location_id = $1
  AND (channel, address, reason) > ($2, $3, $4)
  AND ($5 = '' OR channel = $5)
  AND ($6 = '' OR $6 = 'OUTBOUND')
  AND ($7 = '' OR reason = $7)
  AND ($8 = '' OR source = $8)
  AND ($9::timestamptz IS NULL OR since >= $9)
  AND ($10::timestamptz IS NULL OR since < $10)
  AND ($11 = '' OR contact_id = $11)
  AND ($12 = '' OR address = $12)
ORDER BY location_id, channel, address, reason
LIMIT $13

-- store_erasure_key --
-- The first server to start keeps its candidate; every later one keeps the stored key.
INSERT INTO dnd_erasure_key (key) VALUES ($1) ON CONFLICT DO NOTHING

-- erasure_key --
SELECT key FROM dnd_erasure_key

-- erased_suppressions --
-- The kept suppressions of erased addresses, by the addresses' keyed hashes ($2 channels, $3
-- hashes).
SELECT s.channel, s.address_hash, s.reason, s.source, s.since
FROM dnd_erased_suppressions s
JOIN unnest($2::text[], $3::bytea[]) AS a(channel, address_hash)
  ON s.channel = a.channel AND s.address_hash = a.address_hash
WHERE s.location_id = $1

-- erasure_state --
-- When the (locked) contact was last erased.
SELECT erased_at FROM dnd_contacts WHERE location_id = $1 AND contact_id = $2

-- own_suppressions --
-- The address suppressions the contact's events set.
SELECT channel, address, reason, source, contact_id, actor_id, note, evidence, provider_detail,
       since
FROM dnd_address_suppressions
WHERE location_id = $1 AND contact_id = $2

-- erase_blocks --
-- The contact's blocks without their personal fields; an opt-out's compliance reply not yet
-- sent is spent at $3 with its address (domain/erasure.py ``scrubbed``).
UPDATE dnd_blocks
SET actor_id = '', note = '', evidence = '', provider_detail = '', address = '',
    replied_at = CASE WHEN address <> '' THEN coalesce(replied_at, $3) ELSE replied_at END
WHERE location_id = $1 AND contact_id = $2
  AND (actor_id <> '' OR note <> '' OR evidence <> '' OR provider_detail <> '' OR address <> '')

-- erase_consents --
DELETE FROM dnd_consents WHERE location_id = $1 AND contact_id = $2

-- erase_suppressions --
-- Plaintext suppressions by (channel $2, address $3, reason $4).
DELETE FROM dnd_address_suppressions s
USING unnest($2::text[], $3::text[], $4::text[]) AS a(channel, address, reason)
WHERE s.location_id = $1 AND s.channel = a.channel AND s.address = a.address
  AND s.reason = a.reason

-- keep_erased_suppressions --
-- The opt-outs of erased addresses, kept by keyed hash (those already kept stay as they are).
INSERT INTO dnd_erased_suppressions (location_id, channel, address_hash, reason, source, since,
                                     erased_at)
SELECT $1, k.channel, k.address_hash, k.reason, k.source, coalesce(k.since, $7), $7
FROM unnest($2::text[], $3::bytea[], $4::text[], $5::text[], $6::timestamptz[])
         AS k(channel, address_hash, reason, source, since)
ON CONFLICT DO NOTHING
RETURNING channel, address_hash, reason

-- erase_history --
-- The personal columns of the contact's history, of the changes of the suppressions its events
-- set (made through any contact) and of the changes of the named addresses ($3 channels, $4
-- addresses) cleared; a consent keeps what it was (channel, purpose, method, status, times)
-- without its address, actor, proof and origin. The rows stay: the log stays gapless and every
-- cursor keeps its place. Erasure rows (they hold no personal data) are left as they are.
UPDATE dnd_changes c
SET actor_id = '', note = '', evidence = '', provider_detail = '', address = '',
    consent = c.consent - 'address' - 'actor_id' - 'evidence' - 'consent_source'
WHERE c.location_id = $1 AND c.kind <> 'ERASURE'
  AND (c.contact_id = $2
       OR (c.owner_contact_id = $2 AND c.owner_contact_id <> '')
       OR (c.address <> ''
           AND (c.scope, c.address) IN (SELECT * FROM unnest($3::text[], $4::text[]))))
  AND (c.actor_id <> '' OR c.note <> '' OR c.evidence <> '' OR c.provider_detail <> ''
       OR c.address <> ''
       OR coalesce(c.consent ?| array['address', 'actor_id', 'evidence', 'consent_source'],
                   false))

-- erasure_answers --
-- Stored idempotent answers to scrub: about the contact (or about no one contact), or another
-- contact's that name one of the erased addresses, as a suppression it shares does ($3: each
-- address as a protobuf string field's value, its length then its bytes).
SELECT key, method, response
FROM dnd_idempotency
WHERE location_id = $1 AND response IS NOT NULL AND method <> 'EraseContact'
  AND (contact_id IN ($2, '')
       OR EXISTS (SELECT 1 FROM unnest($3::bytea[]) AS a(field)
                  WHERE position(a.field IN response) > 0))
FOR UPDATE

-- scrub_answer --
UPDATE dnd_idempotency SET response = $3 WHERE location_id = $1 AND key = $2

-- mark_erased --
UPDATE dnd_contacts SET erased_at = $3 WHERE location_id = $1 AND contact_id = $2

-- get_block_expiry --
SELECT sms_carrier_temporary_seconds FROM dnd_location_settings WHERE location_id = $1

-- put_block_expiry --
INSERT INTO dnd_location_settings (location_id, sms_carrier_temporary_seconds, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (location_id) DO UPDATE
SET sms_carrier_temporary_seconds = EXCLUDED.sms_carrier_temporary_seconds, updated_at = now()

-- expiring_contacts --
-- Contacts holding a temporary carrier block at least its location's lifetime old at $1
-- (NULL: the database's clock), at most $2, the oldest blocks first.
SELECT b.location_id, b.contact_id
FROM dnd_location_settings s
CROSS JOIN LATERAL (
    SELECT x.location_id, x.contact_id, x.since
    FROM dnd_blocks x
    WHERE x.location_id = s.location_id AND x.reason = 'SMS_CARRIER_TEMPORARY'
      AND x.since <= coalesce($1, now()) - make_interval(secs => s.sms_carrier_temporary_seconds)
    ORDER BY x.since
    LIMIT $2
) b
WHERE s.sms_carrier_temporary_seconds > 0
ORDER BY b.since
LIMIT $2

-- get_quiet_hours --
SELECT informational, default_time_zone, window_start, window_end
FROM dnd_quiet_hours WHERE location_id = $1

-- put_quiet_hours --
INSERT INTO dnd_quiet_hours (location_id, informational, default_time_zone, window_start,
                             window_end, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (location_id) DO UPDATE
SET informational = EXCLUDED.informational, default_time_zone = EXCLUDED.default_time_zone,
    window_start = EXCLUDED.window_start, window_end = EXCLUDED.window_end,
    updated_at = now()

-- get_delivery_overrides --
SELECT provider, code, channel, reason
FROM dnd_delivery_overrides WHERE location_id = $1
ORDER BY provider, code

-- lock_delivery_overrides --
-- Orders concurrent replacements of one location's overrides.
SELECT pg_advisory_xact_lock(hashtextextended('dnd_delivery_overrides:' || $1, 0))

-- delete_delivery_overrides --
DELETE FROM dnd_delivery_overrides WHERE location_id = $1

-- insert_delivery_overrides --
INSERT INTO dnd_delivery_overrides (location_id, provider, code, channel, reason, updated_at)
SELECT $1, p, c, ch, r, now()
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS t(p, c, ch, r)

-- list_contact_blocks --
-- list_blocks filtered by one contact ($2): the index scan stays within its rows (after the
-- key's direction, scope and reason, $3..$5; '' for the first page), filters $6..$11 as
-- list_blocks' $6..$11 and $12 its address.
SELECT contact_id, direction, scope, reason, source, actor_id, note, evidence,
       provider_detail, since, address, replied_at
FROM dnd_blocks
WHERE location_id = $1 AND contact_id = $2
  AND (direction, scope, reason) > ($3, $4, $5)
  AND ($6 = '' OR scope = $6)
  AND ($7 = '' OR direction = $7)
  AND ($8 = '' OR reason = $8)
  AND ($9 = '' OR source = $9)
  AND ($10::timestamptz IS NULL OR since >= $10)
  AND ($11::timestamptz IS NULL OR since < $11)
  AND ($12 = '' OR address = $12)
ORDER BY location_id, contact_id, direction, scope, reason
LIMIT $13

-- list_address_suppressions --
-- list_suppressions filtered by one address ($2 channel, $3 address): the index scan stays
-- within its rows (after the key's reason $4; '' for the first page), filters $5..$10 as
-- list_suppressions' $6..$11.
SELECT channel, address, reason, source, contact_id, actor_id, note, evidence,
       provider_detail, since
FROM dnd_address_suppressions
WHERE location_id = $1 AND channel = $2 AND address = $3 AND reason > $4
  AND ($5 = '' OR $5 = 'OUTBOUND')
  AND ($6 = '' OR reason = $6)
  AND ($7 = '' OR source = $7)
  AND ($8::timestamptz IS NULL OR since >= $8)
  AND ($9::timestamptz IS NULL OR since < $9)
  AND ($10 = '' OR contact_id = $10)
ORDER BY location_id, channel, address, reason
LIMIT $11
