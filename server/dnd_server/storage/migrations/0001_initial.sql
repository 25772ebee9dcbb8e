-- Contacts with DND state, their active blocks, and the append-only change log.

CREATE TABLE dnd_contacts (
    location_id text NOT NULL,
    contact_id  text NOT NULL,
    -- Grows by one per effective change.
    version     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz,
    -- Sequence number of the contact's last change in dnd_changes (0: none).
    last_seq    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (location_id, contact_id)
);

CREATE TABLE dnd_blocks (
    location_id     text NOT NULL,
    contact_id      text NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('OUTBOUND', 'INBOUND')),
    -- A channel name, or ALL.
    scope           text NOT NULL
        CHECK (scope IN ('ALL', 'CALL', 'EMAIL', 'SMS', 'WHATSAPP', 'FACEBOOK', 'GMB')),
    reason          text NOT NULL,
    source          text NOT NULL,
    actor_id        text NOT NULL DEFAULT '',
    note            text NOT NULL DEFAULT '',
    evidence        text NOT NULL DEFAULT '',
    provider_detail text NOT NULL DEFAULT '',
    since           timestamptz NOT NULL,
    PRIMARY KEY (location_id, contact_id, direction, scope, reason),
    FOREIGN KEY (location_id, contact_id) REFERENCES dnd_contacts (location_id, contact_id),
    CHECK (direction = 'OUTBOUND' OR scope = 'ALL')
);

-- Sequence numbers of dnd_changes are handed out from this one row as the last statement of
-- each writing transaction, so they commit in order: a reader that has seen seq N has seen
-- every change below N.
CREATE TABLE dnd_log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint NOT NULL
);
INSERT INTO dnd_log_head (seq) VALUES (0);

CREATE TABLE dnd_changes (
    seq              bigint PRIMARY KEY,
    location_id      text NOT NULL,
    contact_id       text NOT NULL,
    direction        text NOT NULL,
    scope            text NOT NULL,
    enabled          boolean NOT NULL,
    reason           text NOT NULL,
    source           text NOT NULL,
    actor_id         text NOT NULL DEFAULT '',
    note             text NOT NULL DEFAULT '',
    evidence         text NOT NULL DEFAULT '',
    provider_detail  text NOT NULL DEFAULT '',
    -- The contact's version right after this change.
    version          bigint NOT NULL,
    -- The contact's status summary right after this change.
    outbound         text NOT NULL,
    inbound          text NOT NULL,
    blocked_channels text[] NOT NULL,
    created_at       timestamptz NOT NULL,
    UNIQUE (location_id, contact_id, version)
);

CREATE INDEX dnd_changes_created_at ON dnd_changes (created_at);
