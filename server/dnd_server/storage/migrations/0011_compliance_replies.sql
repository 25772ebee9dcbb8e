-- Compliance replies per location and language, the last opt-out confirmation due per contact
-- and channel, keywords per language, and the RCS channel.

-- Keyword settings: the languages beyond English whose built-in words act, the default
-- language, extra words per language ([{"language", "opt_out_words", "opt_in_words"}]), and
-- whether SMS and RCS share opt-outs.
ALTER TABLE dnd_location_settings
    ADD COLUMN languages text[] NOT NULL DEFAULT '{}',
    ADD COLUMN default_language text NOT NULL DEFAULT 'en',
    ADD COLUMN language_words jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN share_rcs_sms_opt_outs boolean NOT NULL DEFAULT false;

-- A location's brand name, support contact and own reply texts
-- ([{"language", "opt_out_confirmation", "opt_in_confirmation", "help"}], null: the default).
CREATE TABLE dnd_compliance_replies (
    location_id     text PRIMARY KEY,
    brand_name      text NOT NULL,
    support_contact text NOT NULL,
    texts           jsonb NOT NULL DEFAULT '[]',
    updated_at      timestamptz NOT NULL
);

-- The last compliance reply of a kind due to a contact on a channel, written in the same
-- transaction as the keyword that made it due (the contact's row is locked then).
CREATE TABLE dnd_reply_marks (
    location_id text NOT NULL,
    contact_id  text NOT NULL,
    channel     text NOT NULL,
    kind        text NOT NULL,
    last_at     timestamptz NOT NULL,
    PRIMARY KEY (location_id, contact_id, channel, kind)
);

-- RCS business messaging.
ALTER TABLE IF EXISTS dnd_blocks DROP CONSTRAINT IF EXISTS dnd_blocks_scope_check;
ALTER TABLE IF EXISTS dnd_blocks ADD CONSTRAINT dnd_blocks_scope_check
    CHECK (scope IN ('ALL', 'CALL', 'EMAIL', 'SMS', 'WHATSAPP', 'FACEBOOK', 'GMB', 'RCS'));
ALTER TABLE dnd_address_suppressions
    DROP CONSTRAINT IF EXISTS dnd_address_suppressions_channel_check;
ALTER TABLE dnd_address_suppressions ADD CONSTRAINT dnd_address_suppressions_channel_check
    CHECK (channel IN ('SMS', 'EMAIL', 'CALL', 'WHATSAPP', 'FACEBOOK', 'GMB', 'RCS'));
