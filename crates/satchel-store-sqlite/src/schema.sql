-- Satchel's SQLite schema, version 1. Timestamps are integer microseconds since the epoch.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- state: 0 ingesting (invisible), 1 in_progress, 2 canceling, 3 ended.
CREATE TABLE IF NOT EXISTS batches (
    pk                  INTEGER PRIMARY KEY,
    id                  TEXT NOT NULL UNIQUE,
    workspace           TEXT NOT NULL,
    state               INTEGER NOT NULL,
    first_request       INTEGER NOT NULL,
    request_count       INTEGER NOT NULL DEFAULT 0,
    processing          INTEGER NOT NULL DEFAULT 0,
    succeeded           INTEGER NOT NULL DEFAULT 0,
    errored             INTEGER NOT NULL DEFAULT 0,
    canceled            INTEGER NOT NULL DEFAULT 0,
    expired             INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    ended_at            INTEGER,
    cancel_initiated_at INTEGER,
    archived_at         INTEGER,
    -- The create call's headers sent upstream with each request (a small JSON object; NULL:
    -- none). Files written by older versions lack the column; opening the store adds it.
    upstream_headers    TEXT
);
-- Listing newest first within a workspace is a range scan of this index.
CREATE INDEX IF NOT EXISTS batches_by_workspace ON batches (workspace, id);
-- Batches still running, for claims and the expiry sweep.
CREATE INDEX IF NOT EXISTS batches_open ON batches (expires_at) WHERE state IN (1, 2);
-- Ended batches not yet archived, for the retention sweep.
CREATE INDEX IF NOT EXISTS batches_unarchived ON batches (created_at) WHERE state = 3 AND archived_at IS NULL;

-- One row a request; id = the batch's first_request + its position in the batch.
-- params_at NULL: `params` holds the bytes. Otherwise they are params_len bytes at offset
-- params_at of the batch's params file (see blobs.rs) and `params` is empty. (Files written
-- by older versions lack the two columns; opening the store adds them.)
CREATE TABLE IF NOT EXISTS requests (
    id         INTEGER PRIMARY KEY,
    custom_id  TEXT NOT NULL,
    params     BLOB NOT NULL,
    params_at  INTEGER,
    params_len INTEGER
);

-- The requests still to run: narrow, so claims never touch the params blobs.
-- A request is runnable when lease_until <= now (0: never leased). A lease has an owner (the
-- node id that claimed it) and a token from the `next_lease_token` counter, its fencing
-- token: only the current token may renew, settle or release it. (Files written by older
-- versions lack lease_token, owner and model; opening the store adds them.)
CREATE TABLE IF NOT EXISTS queue (
    request_id  INTEGER PRIMARY KEY,
    batch_pk    INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    lease_token INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    model       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- Claims of any model take requests in id order through this index, so results are
-- appended where they go and a claim's params are read in file order. (Without it, claims
-- went through queue_by_model, model by model: settles then wrote results in three
-- interleaved streams, and a 100k run read and wrote twice the bytes.) Claims of some
-- models use queue_by_model, made by pool.rs::migrate.
CREATE INDEX IF NOT EXISTS queue_runnable ON queue (batch_pk, lease_until);

-- The `model` of each request, interned at ingest (queue.model; 0: none), so claims can be
-- made per route.
CREATE TABLE IF NOT EXISTS models (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- The final JSONL line (without newline) of each settled request.
CREATE TABLE IF NOT EXISTS results (
    request_id INTEGER PRIMARY KEY,
    line       BLOB NOT NULL
);
