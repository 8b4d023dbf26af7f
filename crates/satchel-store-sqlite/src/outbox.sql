-- The webhook outbox (see outbox.rs). Timestamps are integer microseconds since the epoch.

-- One row an event. Recorded by the trigger below in the transaction that ends the batch;
-- fanned_out: 1 once its deliveries exist.
CREATE TABLE IF NOT EXISTS webhook_events (
    pk         INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    batch_id   TEXT NOT NULL,
    workspace  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    fanned_out INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhook_events_new ON webhook_events (pk) WHERE fanned_out = 0;
CREATE INDEX IF NOT EXISTS webhook_events_by_age ON webhook_events (created_at);

-- One row an event and endpoint. state: 0 pending, 1 delivered, 2 failed. `attempts`
-- counts claims and is the lease's fencing token.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    pk              INTEGER PRIMARY KEY,
    event_pk        INTEGER NOT NULL,
    workspace       TEXT NOT NULL,
    url             TEXT NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    owner           TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    last_attempt_at INTEGER,
    UNIQUE (event_pk, url)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 0;
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_workspace ON webhook_deliveries (workspace, pk);

-- Whatever ends a batch (the last settle, a sweep, a cancel) records its event in the same
-- transaction: the one place, so no path that ends a batch can forget it.
CREATE TRIGGER IF NOT EXISTS webhook_batch_ended AFTER UPDATE OF state ON batches
WHEN NEW.state = 3 AND OLD.state <> 3
BEGIN
    INSERT INTO webhook_events (id, kind, batch_id, workspace, created_at)
    VALUES ('wevt_' || lower(hex(randomblob(16))), 'message_batch.ended', NEW.id,
            NEW.workspace, COALESCE(NEW.ended_at, 0));
END;
