-- Consent and purpose: consent records, the locations' consent policy, the one compliance
-- reply after an opt-out, and change-log rows that are not block changes.

-- One consent per contact, channel, purpose and address ('' for the contact itself).
CREATE TABLE dnd_consents (
    location_id     text NOT NULL,
    contact_id      text NOT NULL,
    channel         text NOT NULL,
    -- MARKETING or INFORMATIONAL.
    purpose         text NOT NULL,
    address         text NOT NULL DEFAULT '',
    method          text NOT NULL,
    -- EXPRESS or IMPLIED.
    kind            text NOT NULL,
    -- As stored: ACTIVE, PENDING (a double opt-in waiting) or REVOKED. EXPIRED is read off
    -- expires_at / confirm_by at the time of reading.
    status          text NOT NULL,
    captured_at     timestamptz NOT NULL,
    source          text NOT NULL,
    actor_id        text NOT NULL DEFAULT '',
    -- The proof: form_url, disclosure_text, disclosure_version, ip_address, user_agent,
    -- recording_ref (bounded sizes, checked by the service).
    evidence        jsonb NOT NULL DEFAULT '{}',
    expires_at      timestamptz,
    confirm_by      timestamptz,
    revoked_at      timestamptz,
    revoked_by      text NOT NULL DEFAULT '',
    consent_source  text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (location_id, contact_id, channel, purpose, address),
    FOREIGN KEY (location_id, contact_id) REFERENCES dnd_contacts (location_id, contact_id)
);

-- Which purposes need consent on each channel of a location (no row: none).
CREATE TABLE dnd_consent_policy (
    location_id            text NOT NULL,
    channel                text NOT NULL,
    require_marketing      boolean NOT NULL DEFAULT false,
    require_informational  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (location_id, channel),
    CHECK (require_marketing OR NOT require_informational)
);

-- How long a location's pending double opt-ins wait for the contact's confirmation.
ALTER TABLE dnd_location_settings
    ADD COLUMN double_opt_in_window_seconds integer NOT NULL DEFAULT 86400;

-- An opt-out's one compliance reply was allowed then (NULL: not yet).
ALTER TABLE dnd_blocks ADD COLUMN replied_at timestamptz;

-- What a change-log row is about: BLOCK (a block or an address suppression), CONSENT (then
-- consent holds the consent after the change; direction OUTBOUND, scope its channel, reason
-- '' ) or COMPLIANCE_REPLY (scope and reason: the opt-out's).
ALTER TABLE dnd_changes ADD COLUMN kind text NOT NULL DEFAULT 'BLOCK';
ALTER TABLE dnd_changes ADD COLUMN consent jsonb;
