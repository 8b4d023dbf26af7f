-- Results gained their place in the settle order (results while a batch runs): the id of the
-- transaction that wrote them. Ids are handed out at a transaction's first write, not in
-- commit order, so readers hand out only lines below their snapshot's xmin (every
-- transaction below it has ended): a line that commits later never lands behind a reader's
-- cursor. Lines written before this migration read as 0, settled before any.
ALTER TABLE results ADD COLUMN seq bigint NOT NULL DEFAULT 0;
ALTER TABLE results ALTER COLUMN seq SET DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX results_by_seq ON results (seq, request_id);
