-- The suppressions an erasure keeps may be of RCS (added to the other tables by migration 11):
-- without it an erasure of a contact with an RCS opt-out failed and erased nothing.
ALTER TABLE dnd_erased_suppressions
    DROP CONSTRAINT IF EXISTS dnd_erased_suppressions_channel_check;
ALTER TABLE dnd_erased_suppressions ADD CONSTRAINT dnd_erased_suppressions_channel_check
    CHECK (channel IN ('SMS', 'EMAIL', 'CALL', 'WHATSAPP', 'FACEBOOK', 'GMB', 'RCS'));
