-- Requests gained a prompt-prefix key (satchel_core::prefix; 0: not grouped), and claims take
-- a batch's runnable requests in its order, so those sharing a model, system prompt and
-- tools go out together. The index replaces queue_by_batch (batch lookups use its first
-- column); like it, it leaves the lease columns out, so lease updates stay HOT.
ALTER TABLE queue ADD COLUMN prefix bigint NOT NULL DEFAULT 0;
CREATE INDEX queue_by_batch_prefix ON queue (batch_pk, prefix, request_id);
DROP INDEX queue_by_batch;
