-- Erasure of a contact's personal data (EraseContact), and the expiry of temporary carrier
-- blocks.

-- The secret keying the hashes of erased addresses (domain/erasure.py). One per database, so
-- every replica and worker shares it: the first server to start stores a random key, the
-- others read it. Unlike the cursor key it must never be deleted: the suppressions of erased
-- addresses are found by it, and a new key would let their opt-outs lapse.
CREATE TABLE dnd_erasure_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key        bytea NOT NULL CHECK (length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- What stays of an erased contact's address suppressions: the address only as its keyed hash,
-- its channel, reason, source and date. CheckSend with an address whose hash is here denies.
CREATE TABLE dnd_erased_suppressions (
    location_id  text NOT NULL,
    channel      text NOT NULL CHECK (channel IN ('SMS', 'EMAIL', 'CALL', 'WHATSAPP',
                                                  'FACEBOOK', 'GMB')),
    address_hash bytea NOT NULL CHECK (length(address_hash) = 32),
    reason       text NOT NULL,
    source       text NOT NULL,
    since        timestamptz NOT NULL,
    erased_at    timestamptz NOT NULL,
    PRIMARY KEY (location_id, channel, address_hash, reason)
);

-- When the contact's personal data was last erased (NULL: never).
ALTER TABLE dnd_contacts ADD COLUMN erased_at timestamptz;

-- The contact a stored idempotent answer is about ('' when it is not one contact's), so an
-- erasure finds the answers holding the contact's data.
ALTER TABLE dnd_idempotency ADD COLUMN contact_id text NOT NULL DEFAULT '';
CREATE INDEX dnd_idempotency_contact ON dnd_idempotency (location_id, contact_id);

-- How long a location's SMS_CARRIER_TEMPORARY blocks last before the service clears them
-- (0: never, the default).
ALTER TABLE dnd_location_settings
    ADD COLUMN sms_carrier_temporary_seconds integer NOT NULL DEFAULT 0
        CHECK (sms_carrier_temporary_seconds >= 0);

-- The expiry pass finds a location's oldest temporary carrier blocks without a scan of its
-- blocks.
CREATE INDEX dnd_blocks_carrier_temporary_since ON dnd_blocks (location_id, since)
    WHERE reason = 'SMS_CARRIER_TEMPORARY';

-- An erasure finds the suppressions a contact's events set.
CREATE INDEX dnd_address_suppressions_contact ON dnd_address_suppressions (location_id, contact_id);
