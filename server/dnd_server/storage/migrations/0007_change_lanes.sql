-- The change log in lanes: each location's changes go to one lane (a stable hash of the
-- location, see dnd_lane), each lane with its own head row, so writes of locations in
-- different lanes never wait for each other. Within a lane sequence numbers still commit in
-- order (a write holds its lane's head row until it commits).
--
-- The single log of earlier versions becomes the first part of every lane: its changes keep
-- their sequence numbers (so each lane starts with gaps below the old head) and every lane
-- continues from the old head. A position of the single log (an old cursor, seq n) is then the
-- position n in every lane.

-- The lane of a location among ``lanes``: the first 32 bits of the MD5 of its id, modulo.
-- The service computes the same in Python (dnd_server/lanes.py).
CREATE FUNCTION dnd_lane(location_id text, lanes integer) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT (('x' || left(md5(location_id), 8))::bit(32)::bigint % lanes)::integer $$;

-- The log's layout: its lane count (16 unless a new, never written database is given another
-- by DND_CHANGE_LANES) and the single log's head when it was split.
CREATE TABLE dnd_log_layout (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    lanes       integer NOT NULL CHECK (lanes BETWEEN 1 AND 256),
    legacy_head bigint NOT NULL
);
INSERT INTO dnd_log_layout (lanes, legacy_head) SELECT 16, seq FROM dnd_log_head;

-- Each lane's head: the sequence number of its last change. Writers update one row each.
CREATE TABLE dnd_log_lanes (
    lane integer PRIMARY KEY,
    seq  bigint NOT NULL
);
INSERT INTO dnd_log_lanes (lane, seq)
SELECT lane, (SELECT seq FROM dnd_log_head) FROM generate_series(0, 15) AS lane;

-- Each lane's retention horizon: every change of the lane with seq < pruned_below has been
-- pruned. Apart from the heads, so pruning never holds a row writers need.
CREATE TABLE dnd_log_horizons (
    lane         integer PRIMARY KEY,
    pruned_below bigint NOT NULL
);
INSERT INTO dnd_log_horizons (lane, pruned_below)
SELECT lane, (SELECT pruned_below FROM dnd_log_head) FROM generate_series(0, 15) AS lane;

ALTER TABLE dnd_changes ADD COLUMN lane integer;
UPDATE dnd_changes SET lane = dnd_lane(location_id, 16);
ALTER TABLE dnd_changes ALTER COLUMN lane SET NOT NULL;
-- Every lane's head as the writing statement saw it (committed), its own lane's entry aside
-- (that one is the change's seq): the change's position in the whole log. NULL on a change
-- of the single log, whose position is its seq in every lane.
ALTER TABLE dnd_changes ADD COLUMN heads bigint[];
ALTER TABLE dnd_changes DROP CONSTRAINT dnd_changes_pkey;
ALTER TABLE dnd_changes ADD PRIMARY KEY (lane, seq);

DROP TABLE dnd_log_head;
