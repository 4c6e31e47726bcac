-- Retention: what each chain has pruned, so that the stored window stays honest after the rows
-- are gone (docs/operations.md, "Retention").
--
-- One row per chain that has pruned at least once, written in the transaction of each prune:
-- - `low_block`: the lowest block still held. Every block below it was deleted whole (header
--   and logs together), and the writer drops any event a provider delivers below it later (a
--   slow node, a re-read after a restart): the unique key covers the window, this covers the
--   rest.
-- - `oldest_cursor`: the highest cursor any pruned row (event or change) had. A reader resuming
--   after a cursor at or above it misses nothing; one resuming below it would, and is told so
--   (`cursor_expired`).
-- - `pruned_events`: events deleted over the chain's life, for operators.
-- `reset-chain` sets `low_block` back to 0 (the chain is indexed over again) and keeps
-- `oldest_cursor` (the pruned rows stay gone for readers).
CREATE TABLE retention (
    chain         TEXT    PRIMARY KEY,
    low_block     INTEGER NOT NULL CHECK (low_block >= 0),
    oldest_cursor INTEGER NOT NULL CHECK (oldest_cursor >= 0),
    pruned_events INTEGER NOT NULL DEFAULT 0 CHECK (pruned_events >= 0),
    updated_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A prune deletes the finality advances that only speak of pruned blocks; without this index
-- that delete would read every row of `changes`. Finality rows are a few per block at most.
CREATE INDEX changes_finality ON changes (chain, to_block) WHERE kind = 'finality';
