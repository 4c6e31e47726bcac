-- The rows a reorg removed, by chain and height. Every range the range sync commits restores the
-- removed rows of its heights that are canonical again; without this index that check read every
-- row at those heights (thousands per range, on the hot write path) to look at `removed`. Removed
-- rows are rare, so the index is small, and a restore finds them without touching the others.
CREATE INDEX events_removed ON events (chain, block_number) WHERE removed = 1;
