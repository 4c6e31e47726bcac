-- V5: a compact `events` row, a header per stored block, and the cursor spans that let a block
-- range be read in cursor order (docs/storage.md).
--
-- Rebuilds `events` (and `changes`, whose foreign key names it). The store runs migrations with
-- foreign keys off, as SQLite's procedure for changing a table's layout asks (dropping the old
-- `events` must not cascade into `changes`), and checks every key afterwards.
--
-- What changed, per event (measured on a devnet database, `scripts/db-bytes`):
-- * `chain` and `first_provider` are integers into `names` (interned strings) instead of text
--   repeated on every row and in every index entry that carries `chain`.
-- * `kind` is gone: a block is `log_index = -1`, which the table already enforced.
-- * `parent_hash` and `block_timestamp` live once per block in `headers`, not on every log.
-- * The value indexes (address, topics, tx_hash) hold the last 8 bytes of the value instead of
--   all 20 or 32: a seek on them finds the rows, the full value is checked on the row that is
--   read anyway. The last bytes, not the first: an address in a topic is padded with 12 zero
--   bytes in front, and vanity addresses start with zeros. Two values sharing their last 64
--   bits only cost a row read.
-- * `events_block_hash` is gone: a block hash is looked up in `headers` (one row per block),
--   which gives the height, and the identity index finds its rows.

-- Interned names: chain names and provider ids, each stored once.
CREATE TABLE names (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
) STRICT;
INSERT INTO names (name)
    SELECT chain FROM events UNION SELECT first_provider FROM events ORDER BY 1;

-- One row per stored block (per chain and hash; an orphaned block keeps its row): the header
-- fields every event of the block shares, and the span and count of the cursors its events
-- took. `first_cursor` and `last_cursor` bound where a block range's events sit in the change
-- feed, so a query on a range walks an index in cursor order between them instead of sorting
-- the range (`store/query/plan.rs`). `events` counts the block's rows, for retention.
CREATE TABLE headers (
    chain           INTEGER NOT NULL,
    block_number    INTEGER NOT NULL CHECK (block_number >= 0),
    block_hash      BLOB    NOT NULL CHECK (length(block_hash) = 32),
    parent_hash     BLOB    NOT NULL CHECK (length(parent_hash) = 32),
    block_timestamp INTEGER NOT NULL CHECK (block_timestamp >= 0),
    first_cursor    INTEGER NOT NULL,
    last_cursor     INTEGER NOT NULL CHECK (last_cursor >= first_cursor),
    events          INTEGER NOT NULL CHECK (events >= 0),
    PRIMARY KEY (chain, block_number, block_hash)
) STRICT, WITHOUT ROWID;
-- `GET /v1/events?block_hash=`: the hash gives the chain and height.
CREATE INDEX headers_hash ON headers (block_hash);

-- The same spans per group of 256 consecutive heights (`grp` = block_number >> 8): a wide
-- range's bounds read one row per group, and only its two partial groups from `headers`.
-- `first_cursor` may be lower than any row still held (retention deletes a group's lower
-- blocks and leaves it): a bound that is too wide costs nothing, as no row sits there.
CREATE TABLE header_groups (
    chain        INTEGER NOT NULL,
    grp          INTEGER NOT NULL CHECK (grp >= 0),
    first_cursor INTEGER NOT NULL,
    last_cursor  INTEGER NOT NULL CHECK (last_cursor >= first_cursor),
    events       INTEGER NOT NULL CHECK (events >= 0),
    PRIMARY KEY (chain, grp)
) STRICT, WITHOUT ROWID;

INSERT INTO headers
    SELECT n.id, e.block_number, e.block_hash, min(e.parent_hash), min(e.block_timestamp),
           min(e.cursor), max(e.cursor), count(*)
    FROM events e JOIN names n ON n.name = e.chain
    GROUP BY n.id, e.block_number, e.block_hash;
INSERT INTO header_groups
    SELECT chain, block_number >> 8, min(first_cursor), max(last_cursor), sum(events)
    FROM headers GROUP BY chain, block_number >> 8;

-- The event row. The rules of V1 hold (cursor is the rowid; reorgs mark, never delete; the
-- content key is unique per chain), with the layout changes above.
CREATE TABLE events_v5 (
    cursor          INTEGER PRIMARY KEY,
    chain           INTEGER NOT NULL,
    block_number    INTEGER NOT NULL CHECK (block_number >= 0),
    block_hash      BLOB    NOT NULL CHECK (length(block_hash) = 32),
    -- -1 for a block (see V1: never NULL, so the unique key holds for blocks too).
    log_index       INTEGER NOT NULL CHECK (log_index >= -1),
    tx_hash         BLOB    CHECK (tx_hash IS NULL OR length(tx_hash) = 32),
    tx_index        INTEGER CHECK (tx_index IS NULL OR tx_index >= 0),
    address         BLOB    CHECK (address IS NULL OR length(address) = 20),
    topic0          BLOB    CHECK (topic0 IS NULL OR length(topic0) = 32),
    topic1          BLOB    CHECK (topic1 IS NULL OR length(topic1) = 32),
    topic2          BLOB    CHECK (topic2 IS NULL OR length(topic2) = 32),
    topic3          BLOB    CHECK (topic3 IS NULL OR length(topic3) = 32),
    data            BLOB,
    removed         INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
    first_provider  INTEGER NOT NULL,
    providers_seen  INTEGER NOT NULL DEFAULT 1 CHECK (providers_seen >= 1),
    providers_mask  INTEGER NOT NULL DEFAULT 0,
    received_at     INTEGER NOT NULL,
    CHECK (log_index >= 0 OR (tx_hash IS NULL AND tx_index IS NULL AND address IS NULL
                              AND topic0 IS NULL AND data IS NULL)),
    CHECK (log_index = -1 OR (tx_hash IS NOT NULL AND tx_index IS NOT NULL
                              AND address IS NOT NULL AND data IS NOT NULL)),
    CHECK (topic1 IS NULL OR topic0 IS NOT NULL),
    CHECK (topic2 IS NULL OR topic1 IS NOT NULL),
    CHECK (topic3 IS NULL OR topic2 IS NOT NULL)
) STRICT;

INSERT INTO events_v5
    SELECT e.cursor, c.id, e.block_number, e.block_hash, e.log_index, e.tx_hash, e.tx_index,
           e.address, e.topic0, e.topic1, e.topic2, e.topic3, e.data, e.removed, p.id,
           e.providers_seen, e.providers_mask, e.received_at
    FROM events e JOIN names c ON c.name = e.chain JOIN names p ON p.name = e.first_provider
    ORDER BY e.cursor;

-- `changes` again, its foreign key now naming the new table (same columns and rows).
CREATE TABLE changes_v5 (
    cursor       INTEGER PRIMARY KEY,
    chain        TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('removed', 'restored', 'finality')),
    event_cursor INTEGER REFERENCES events (cursor) ON DELETE CASCADE,
    finality     TEXT    CHECK (finality IN ('safe', 'finalized')),
    to_block     INTEGER CHECK (to_block >= 0),
    created_at   INTEGER NOT NULL,
    CHECK ((kind IN ('removed', 'restored') AND event_cursor IS NOT NULL AND finality IS NULL
            AND to_block IS NULL)
        OR (kind = 'finality' AND event_cursor IS NULL AND finality IS NOT NULL
            AND to_block IS NOT NULL))
) STRICT;
INSERT INTO changes_v5 SELECT * FROM changes ORDER BY cursor;

DROP TABLE changes;
DROP TABLE events;
ALTER TABLE events_v5 RENAME TO events;
ALTER TABLE changes_v5 RENAME TO changes;

CREATE INDEX changes_event ON changes (event_cursor) WHERE event_cursor IS NOT NULL;
CREATE INDEX changes_finality ON changes (chain, to_block) WHERE kind = 'finality';

-- The content identity (invariant 1), as in V1.
CREATE UNIQUE INDEX events_identity ON events (chain, block_number, block_hash, log_index);
-- `chain = ?` in cursor order (every index ends in the rowid, the cursor).
CREATE INDEX events_chain ON events (chain);
-- A chain's block rows in cursor order. Queries spell `log_index = -1` literally.
CREATE INDEX events_chain_blocks ON events (chain) WHERE log_index = -1;
-- The value filters, on their last 8 bytes (queries name the same expression and check the
-- full value beside it).
CREATE INDEX events_address ON events (substr(address, 13, 8)) WHERE address IS NOT NULL;
CREATE INDEX events_topic0 ON events (substr(topic0, 25, 8)) WHERE topic0 IS NOT NULL;
CREATE INDEX events_topic1 ON events (substr(topic1, 25, 8)) WHERE topic1 IS NOT NULL;
CREATE INDEX events_topic2 ON events (substr(topic2, 25, 8)) WHERE topic2 IS NOT NULL;
CREATE INDEX events_topic3 ON events (substr(topic3, 25, 8)) WHERE topic3 IS NOT NULL;
CREATE INDEX events_tx_hash ON events (substr(tx_hash, 25, 8)) WHERE tx_hash IS NOT NULL;
-- The rows a reorg removed (V3).
CREATE INDEX events_removed ON events (chain, block_number) WHERE removed = 1;
