-- Whose opt-out an address change is, who really made each change, and the indexes of the
-- contact and address histories (paged by sequence number, newest first).

-- For an address suppression change (added or cleared): the contact whose event set the
-- suppression. '' for a change of a contact's block.
ALTER TABLE dnd_changes ADD COLUMN owner_contact_id text NOT NULL DEFAULT '';

-- The authenticated caller that made the change: the token's name, or 'anonymous <peer>' when
-- the server runs without tokens. '' on changes logged before callers were recorded.
ALTER TABLE dnd_changes ADD COLUMN caller text NOT NULL DEFAULT '';

-- A contact's own changes, newest first.
CREATE INDEX dnd_changes_contact_seq ON dnd_changes (location_id, contact_id, seq);

-- Changes of the suppressions a contact's events set, made through any contact.
CREATE INDEX dnd_changes_owner_seq ON dnd_changes (location_id, owner_contact_id, seq)
    WHERE owner_contact_id <> '';

-- An address's history: the changes of its suppressions (scope holds the channel).
CREATE INDEX dnd_changes_address_seq ON dnd_changes (location_id, scope, address, seq)
    WHERE address <> '';

-- Changes logged before: a suppression added was set by the contact whose event added it; a
-- suppression cleared belongs to the contact whose change last added it (or, when that change
-- was pruned, to the contact the clear named).
UPDATE dnd_changes SET owner_contact_id = contact_id WHERE address <> '' AND enabled;

UPDATE dnd_changes c
SET owner_contact_id = coalesce(
    (SELECT e.contact_id
     FROM dnd_changes e
     WHERE e.location_id = c.location_id AND e.scope = c.scope AND e.address = c.address
       AND e.address <> '' AND e.reason = c.reason AND e.enabled AND e.seq < c.seq
     ORDER BY e.seq DESC
     LIMIT 1),
    c.contact_id)
WHERE c.address <> '' AND NOT c.enabled;
