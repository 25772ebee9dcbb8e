-- Change stream: the retention horizon of the change log.

-- Every change with seq < pruned_below has been pruned (cursors below it have expired).
ALTER TABLE dnd_log_head ADD COLUMN pruned_below bigint NOT NULL DEFAULT 1;
