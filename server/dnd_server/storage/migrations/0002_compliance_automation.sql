-- Address-level suppressions, idempotency keys, per-location keyword settings.

-- The address the event that set a block carried ('' if none).
ALTER TABLE dnd_blocks ADD COLUMN address text NOT NULL DEFAULT '';

-- Set when the change is an address suppression (added or cleared) rather than a block.
ALTER TABLE dnd_changes ADD COLUMN address text NOT NULL DEFAULT '';

CREATE TABLE dnd_address_suppressions (
    location_id     text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('SMS', 'EMAIL', 'CALL', 'WHATSAPP',
                                                     'FACEBOOK', 'GMB')),
    -- E.164 phone number or lower-case email address.
    address         text NOT NULL,
    reason          text NOT NULL,
    source          text NOT NULL,
    -- The contact whose event set it.
    contact_id      text NOT NULL,
    actor_id        text NOT NULL DEFAULT '',
    note            text NOT NULL DEFAULT '',
    evidence        text NOT NULL DEFAULT '',
    provider_detail text NOT NULL DEFAULT '',
    since           timestamptz NOT NULL,
    PRIMARY KEY (location_id, channel, address, reason)
);

-- The first answer to each idempotency key, kept for the retention window.
CREATE TABLE dnd_idempotency (
    location_id  text NOT NULL,
    key          text NOT NULL,
    method       text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (location_id, key)
);
CREATE INDEX dnd_idempotency_created_at ON dnd_idempotency (created_at);

CREATE TABLE dnd_location_settings (
    location_id               text PRIMARY KEY,
    extra_opt_out_words       text[] NOT NULL DEFAULT '{}',
    extra_opt_in_words        text[] NOT NULL DEFAULT '{}',
    detect_revocation_phrases boolean NOT NULL DEFAULT false,
    updated_at                timestamptz NOT NULL DEFAULT now()
);
