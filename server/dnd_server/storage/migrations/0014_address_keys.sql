-- Addresses are stored under their keys (domain/addresses.py): an email in NFC, lower-case,
-- without invisible characters or a mailto: wrapping, its domain as people read it (IDNA
-- labels decoded). After this file, in the same transaction, storage/rekey.py moves the
-- addresses stored under an older spelling to their keys, merging those that meet; address
-- suppressions it copies, keeping the old rows for the servers of the version before while a
-- rolling update goes on, and records them here: 'dnd-server rekey' drops them after it.
COMMENT ON COLUMN dnd_address_suppressions.address IS
    'The address''s key: E.164 for a phone, the normalised email (domain/addresses.py)';
COMMENT ON COLUMN dnd_consents.address IS
    'The address''s key as in dnd_address_suppressions, or '''' for the contact itself';

CREATE TABLE dnd_rekeyed_suppressions (
    location_id text NOT NULL,
    channel     text NOT NULL,
    address     text NOT NULL,
    reason      text NOT NULL,
    PRIMARY KEY (location_id, channel, address, reason)
);
