-- The secret that seals change cursors and ListHistory page tokens (dnd_server/cursor.py).
-- One per database, so every replica and worker of a deployment shares it: the first server to
-- start stores a random key, the others read it. Deleting the row invalidates every cursor and
-- page token handed out (a new key is made at the next start).
CREATE TABLE dnd_cursor_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key        bytea NOT NULL CHECK (length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
