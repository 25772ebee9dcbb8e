-- Quiet hours: a location's settings (no row: none, the legal rules alone).
CREATE TABLE dnd_quiet_hours (
    location_id        text PRIMARY KEY,
    -- INFORMATIONAL calls and texts are judged too (MARKETING always are).
    informational      boolean NOT NULL DEFAULT false,
    -- IANA zone of recipients whose zone neither the request nor the number tells ('': none).
    default_time_zone  text NOT NULL DEFAULT '',
    -- The location's own daily window, in seconds after local midnight (NULL: none); it
    -- narrows the legal windows, never widens them.
    window_start       integer,
    window_end         integer,
    updated_at         timestamptz NOT NULL,
    CHECK ((window_start IS NULL) = (window_end IS NULL)),
    CHECK (window_start IS NULL OR (0 <= window_start AND window_start < window_end
                                    AND window_end <= 86400))
);
