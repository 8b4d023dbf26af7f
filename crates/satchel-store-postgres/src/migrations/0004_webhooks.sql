-- The webhook outbox (see outbox.rs). (Version 3: version 2 is left to the work on results
-- while a batch runs; the migrator applies whatever is above the applied version, in order.)
-- Times are microseconds since the epoch, on the nodes' clocks except lease_until, which is
-- on the database's clock, like the queue's leases.

-- One row an event, recorded by the trigger below in the transaction that ends the batch;
-- fanned_out once its deliveries exist.
CREATE TABLE webhook_events (
    pk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         text NOT NULL UNIQUE,
    kind       text NOT NULL,
    batch_id   text NOT NULL,
    workspace  text NOT NULL,
    created_at bigint NOT NULL,
    fanned_out boolean NOT NULL DEFAULT false
);
CREATE INDEX webhook_events_new ON webhook_events (pk) WHERE NOT fanned_out;
CREATE INDEX webhook_events_by_age ON webhook_events (created_at);

-- One row an event and endpoint. state: 0 pending, 1 delivered, 2 failed. `attempts`
-- counts claims and is the lease's fencing token.
CREATE TABLE webhook_deliveries (
    pk              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_pk        bigint NOT NULL,
    workspace       text NOT NULL,
    url             text NOT NULL,
    state           smallint NOT NULL DEFAULT 0,
    attempts        bigint NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,
    lease_until     bigint NOT NULL DEFAULT 0,
    owner           text,
    last_status     integer,
    last_error      text,
    created_at      bigint NOT NULL,
    last_attempt_at bigint,
    UNIQUE (event_pk, url)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 0;
CREATE INDEX webhook_deliveries_by_workspace ON webhook_deliveries (workspace, pk);

-- Whatever ends a batch (the last settle, a sweep chunk, a cancel) records its event in the
-- same transaction: the one place, so no path that ends a batch can forget it.
CREATE FUNCTION satchel_webhook_batch_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_events (id, kind, batch_id, workspace, created_at)
    VALUES ('wevt_' || replace(gen_random_uuid()::text, '-', ''), 'message_batch.ended',
            NEW.id, NEW.workspace, COALESCE(NEW.ended_at, 0));
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_batch_ended AFTER UPDATE OF state ON batches FOR EACH ROW
    WHEN (NEW.state = 3 AND OLD.state <> 3) EXECUTE FUNCTION satchel_webhook_batch_ended();
