-- V1: the initial Livechain schema (DESIGN.md section 5).
--
-- Landed migrations are never edited: change the schema with a new V{n}__{name}.sql file.
-- Each migration runs in one transaction together with refinery's history row, so a crash leaves
-- either all of it or none of it. For the same reason no migration may use PRAGMAs that cannot
-- run inside a transaction (journal_mode, foreign_keys): the store sets those per connection.
--
-- Conventions for every table:
-- * STRICT: SQLite refuses a value of the wrong type instead of silently storing text in an
--   INTEGER column; a bug in a writer shows up as an error, not as rows no query finds.
-- * Hashes and addresses are BLOBs of their raw bytes (32 and 20): half the size of hex text in
--   the table and in every index that holds them, and comparisons are plain memcmp.
-- * Times are INTEGER milliseconds since the Unix epoch (`*_at`); block timestamps are seconds,
--   as the chain gives them.
-- * Small keyed tables use WITHOUT ROWID: their rows live in the primary-key B-tree itself, so a
--   lookup by key is one B-tree search instead of an index search plus a rowid search.

-- Every block and log ever stored, canonical or not (invariant 5: reorgs mark, never delete).
--
-- `cursor` is the INTEGER PRIMARY KEY, i.e. the rowid: the event's position in the one change
-- feed (invariant 2), assigned by the single writer. Keeping it as the rowid makes the table
-- physically ordered by cursor, so feed reads (`cursor > ?`) are range scans and every secondary
-- index below implicitly ends in `cursor` (SQLite appends the rowid to each index entry): an index
-- on `(address)` is really `(address, cursor)` and serves
-- `WHERE address = ? AND cursor > ? ORDER BY cursor LIMIT n` with one seek and no sort, in either
-- direction. Naming `cursor` explicitly in those indexes would store it twice per entry.
-- It is not AUTOINCREMENT: the writer assigns cursors itself, because removals and finality
-- advances (table `changes`) take numbers from the same sequence.
--
-- A log row carries its block's fields (number, hash, parent, timestamp) so that a log is
-- complete on its own even when no block subscription stored the block row.
CREATE TABLE events (
    cursor          INTEGER PRIMARY KEY,
    chain           TEXT    NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('block', 'log')),
    block_number    INTEGER NOT NULL CHECK (block_number >= 0),
    block_hash      BLOB    NOT NULL CHECK (length(block_hash) = 32),
    parent_hash     BLOB    NOT NULL CHECK (length(parent_hash) = 32),
    block_timestamp INTEGER NOT NULL CHECK (block_timestamp >= 0),
    -- Log fields: NULL for a block (the CHECKs at the end enforce which is which).
    tx_hash         BLOB    CHECK (tx_hash IS NULL OR length(tx_hash) = 32),
    tx_index        INTEGER CHECK (tx_index IS NULL OR tx_index >= 0),
    -- NOT NULL on purpose, -1 for a block. log_index is part of the unique content key below, and
    -- SQLite treats NULLs as distinct from each other in a UNIQUE index: with NULL for blocks the
    -- same block could be inserted any number of times. -1 is never a real log index (they start
    -- at 0), so (block_hash, -1) names the block and (block_hash, i >= 0) its logs. The store maps
    -- -1 to `None` in Rust; nothing outside `store/` ever sees it.
    log_index       INTEGER NOT NULL CHECK (log_index >= -1),
    address         BLOB    CHECK (address IS NULL OR length(address) = 20),
    -- Topics are positional: a log with n topics fills topic0..topic(n-1) and leaves the rest
    -- NULL. Four columns rather than a list so each can be indexed and filtered on its own
    -- (REST `topic0`..`topic3`); the EVM has no log with more than four (LOG0..LOG4).
    topic0          BLOB    CHECK (topic0 IS NULL OR length(topic0) = 32),
    topic1          BLOB    CHECK (topic1 IS NULL OR length(topic1) = 32),
    topic2          BLOB    CHECK (topic2 IS NULL OR length(topic2) = 32),
    topic3          BLOB    CHECK (topic3 IS NULL OR length(topic3) = 32),
    -- Empty data is a zero-length BLOB, not NULL: NULL means "this is a block".
    data            BLOB,
    -- Set when a reorg orphans the event; the removal itself is a row of `changes`.
    removed         INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
    -- Provider `id` (never a URL: URLs carry API keys) whose copy was stored first.
    first_provider  TEXT    NOT NULL,
    -- How many deliveries of this content arrived at the writer (1 + duplicates). The aggregator
    -- dedupes most copies in memory; the writer's upsert counts the ones that reach it.
    providers_seen  INTEGER NOT NULL DEFAULT 1 CHECK (providers_seen >= 1),
    received_at     INTEGER NOT NULL,
    CHECK ((kind = 'block') = (log_index = -1)),
    CHECK (kind = 'log' OR (tx_hash IS NULL AND tx_index IS NULL AND address IS NULL
                            AND topic0 IS NULL AND data IS NULL)),
    CHECK (kind = 'block' OR (tx_hash IS NOT NULL AND tx_index IS NOT NULL
                              AND address IS NOT NULL AND data IS NOT NULL)),
    CHECK (topic1 IS NULL OR topic0 IS NOT NULL),
    CHECK (topic2 IS NULL OR topic1 IS NOT NULL),
    CHECK (topic3 IS NULL OR topic2 IS NOT NULL)
) STRICT;

-- Finality is deliberately NOT a column. Updating `finality` on every row when the chain's
-- finalized block advances would rewrite millions of rows and their index entries. Instead each
-- chain's `safe_block` and `finalized_block` live in `checkpoints`, and a row's finality is
-- derived when read: block_number <= finalized_block => 'finalized', else
-- block_number <= safe_block => 'safe', else 'latest'. A REST `finality` filter therefore becomes
-- a `block_number` range, served by the index below.

-- Invariant 1, exactly once in storage: the content identity, unique per chain. A block is
-- (block_hash, -1), a log (block_hash, log_index). `block_number` sits before the hash although
-- the hash alone identifies the block: numbers grow with time, so live inserts land at the right
-- edge of this B-tree (a few hot pages stay cached) instead of at random positions by hash, and
-- the same index serves `chain = ? AND block_number BETWEEN ? AND ?` (REST `from_block`,
-- `to_block`, `finality`). Such a range is then sorted by cursor: cheap for the narrow ranges
-- those filters are used with. The writer's upsert names exactly these columns in ON CONFLICT.
CREATE UNIQUE INDEX events_identity ON events (chain, block_number, block_hash, log_index);

-- Indexes for the REST filters of DESIGN.md section 8, every one combined with cursor
-- pagination (`after`, `order` asc|desc). Each is implicitly suffixed by `cursor` (see above).
--
-- The value indexes (address, topics, tx_hash, block_hash) do not start with `chain`: a query
-- may filter on an address or topic without naming a chain, and an index led by `chain` could not
-- serve it (it would fall back to scanning the whole table in cursor order, which is terrible for
-- a rare value). With `chain` left out, a query that does name a chain seeks on the value and
-- checks `chain` on the row it reads anyway; the only waste is rows of other chains with the same
-- value (for instance the ERC-20 Transfer topic0 on every chain), bounded by the number of chains
-- in one database.
--
-- They are partial (`WHERE col IS NOT NULL`): block rows have no address, topics or tx_hash, and
-- many logs have fewer than four topics, so those entries would be dead weight in the index and
-- in every insert. SQLite uses a partial index for `col = ?` and `col IN (...)` because those
-- imply `col IS NOT NULL`.

-- `chain = ?` alone (and with `kind = 'log'`, nearly every row of a chain being a log): walks the
-- chain's rows in cursor order. Entries are appended at the right edge of each chain's range.
CREATE INDEX events_chain ON events (chain);
-- `chain = ? AND kind = 'block'`: blocks are a small fraction of rows (one per block against
-- dozens of logs), so walking `events_chain` for them would read and discard many logs. Tiny
-- index. The query must spell `kind = 'block'` literally (not as a bound parameter) for SQLite to
-- prove the partial index applies.
CREATE INDEX events_chain_blocks ON events (chain) WHERE kind = 'block';
CREATE INDEX events_address ON events (address) WHERE address IS NOT NULL;
CREATE INDEX events_topic0 ON events (topic0) WHERE topic0 IS NOT NULL;
CREATE INDEX events_topic1 ON events (topic1) WHERE topic1 IS NOT NULL;
CREATE INDEX events_topic2 ON events (topic2) WHERE topic2 IS NOT NULL;
CREATE INDEX events_topic3 ON events (topic3) WHERE topic3 IS NOT NULL;
CREATE INDEX events_tx_hash ON events (tx_hash) WHERE tx_hash IS NOT NULL;
-- Not partial: every row has a block hash. Finds a block and all its logs, also for a chain whose
-- subscriptions store logs but no block rows (where `events_identity` needs the number first).
CREATE INDEX events_block_hash ON events (block_hash);
-- No index on `removed`: canonical queries filter `removed = 0` and removed rows are rare, so the
-- check on the row read through another index costs nothing, and an index on a two-valued column
-- would cost every insert.

-- The rest of the change feed (invariant 2). Additions are the `events` rows themselves; a
-- removal by reorg, a restoration (a later reorg made a removed event canonical again) and a
-- finality advance are rows here, with cursors from the same sequence.
-- The feed is `events` UNION ALL `changes` ordered by cursor: both are range scans on their
-- primary key, merged. Cursors are strictly increasing, not dense: a duplicate insert wastes the
-- number the writer had assigned to it.
CREATE TABLE changes (
    cursor       INTEGER PRIMARY KEY,
    chain        TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('removed', 'restored', 'finality')),
    -- 'removed' / 'restored': the event retracted or made canonical again (its own, older,
    -- cursor). ON DELETE CASCADE so retention can prune old events without leaving dangling
    -- removals behind.
    event_cursor INTEGER REFERENCES events (cursor) ON DELETE CASCADE,
    -- 'finality': every block of `chain` up to and including `to_block` reached `finality`.
    finality     TEXT    CHECK (finality IN ('safe', 'finalized')),
    to_block     INTEGER CHECK (to_block >= 0),
    created_at   INTEGER NOT NULL,
    CHECK ((kind IN ('removed', 'restored') AND event_cursor IS NOT NULL AND finality IS NULL
            AND to_block IS NULL)
        OR (kind = 'finality' AND event_cursor IS NULL AND finality IS NOT NULL
            AND to_block IS NOT NULL))
) STRICT;
-- Serves the foreign key (deleting an event looks up its removals; without an index every
-- deletion would scan `changes`) and "was this event removed, and by which cursor".
CREATE INDEX changes_event ON changes (event_cursor) WHERE event_cursor IS NOT NULL;

-- High-water mark of the cursor sequence: one row, raised in every write transaction that uses
-- cursors. The writer starts from max(this, max(events.cursor), max(changes.cursor)), so even if
-- retention deleted the newest rows a cursor is never handed out twice: a client resuming with
-- `since=N` must never miss a change that reused a number below N.
CREATE TABLE cursor_sequence (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    last_cursor INTEGER NOT NULL CHECK (last_cursor >= 0)
) STRICT;
INSERT INTO cursor_sequence (id, last_cursor) VALUES (1, 0);

-- Invariant 4, restart safety: per chain, the last block fully processed, written in the same
-- transaction as its events. `safe_block` and `finalized_block` (NULL until known) are what row
-- finality is derived from (see `events`); they only ever move forward, and each advance is a
-- 'finality' row of `changes` in the same transaction. `block_number` may move back (a reorg
-- rewinds to the common ancestor).
CREATE TABLE checkpoints (
    chain           TEXT    PRIMARY KEY,
    block_number    INTEGER NOT NULL CHECK (block_number >= 0),
    block_hash      BLOB    NOT NULL CHECK (length(block_hash) = 32),
    safe_block      INTEGER CHECK (safe_block >= 0),
    finalized_block INTEGER CHECK (finalized_block >= 0),
    updated_at      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Circuit breaker per provider (DESIGN.md section 7), persisted on every transition so that an
-- open breaker stays open across a restart until `opened_at + recovery_timeout` has passed on the
-- wall clock. A provider `id` is unique within its chain, hence the key.
CREATE TABLE breakers (
    chain                 TEXT    NOT NULL,
    provider              TEXT    NOT NULL,
    state                 TEXT    NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_failures  INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    consecutive_successes INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_successes >= 0),
    -- Wall-clock ms of the last closed -> open or half_open -> open transition; NULL if never.
    opened_at             INTEGER,
    updated_at            INTEGER NOT NULL,
    PRIMARY KEY (chain, provider)
) STRICT, WITHOUT ROWID;

-- The registry's desired set and each task's status (DESIGN.md section 7). At start the
-- supervisor restores every row with desired = 1.
CREATE TABLE processes (
    kind       TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    -- What the supervisor needs to restart the task, as JSON; validated so a bad write fails at
    -- the write, not at the next start.
    spec       TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(spec)),
    desired    INTEGER NOT NULL DEFAULT 1 CHECK (desired IN (0, 1)),
    -- Free text on purpose (no CHECK): the registry owns the status vocabulary and may grow it
    -- without a migration.
    status     TEXT    NOT NULL,
    restarts   INTEGER NOT NULL DEFAULT 0 CHECK (restarts >= 0),
    -- Already redacted by the caller: never a provider URL (invariant 8).
    last_error TEXT,
    started_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) STRICT, WITHOUT ROWID;

-- Per chain and provider: events delivered first, delivered late (and by how much), never
-- delivered. Counters, updated by the aggregator's periodic flush rather than per event.
CREATE TABLE provider_stats (
    chain           TEXT    NOT NULL,
    provider        TEXT    NOT NULL,
    delivered_first INTEGER NOT NULL DEFAULT 0 CHECK (delivered_first >= 0),
    delivered_late  INTEGER NOT NULL DEFAULT 0 CHECK (delivered_late >= 0),
    late_ms_total   INTEGER NOT NULL DEFAULT 0 CHECK (late_ms_total >= 0),
    late_ms_max     INTEGER NOT NULL DEFAULT 0 CHECK (late_ms_max >= 0),
    missed          INTEGER NOT NULL DEFAULT 0 CHECK (missed >= 0),
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (chain, provider)
) STRICT, WITHOUT ROWID;

-- Lateness distribution per provider, for median and p99 without storing every sample: a
-- histogram with power-of-two millisecond buckets. `bucket` b counts late deliveries with
-- 2^(b-1) < late_ms <= 2^b (b = 0 holds late_ms <= 1), so 64 rows at most per provider and
-- quantiles are exact to within a factor of two.
CREATE TABLE provider_lateness (
    chain    TEXT    NOT NULL,
    provider TEXT    NOT NULL,
    bucket   INTEGER NOT NULL CHECK (bucket BETWEEN 0 AND 63),
    count    INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (chain, provider, bucket)
) STRICT, WITHOUT ROWID;
