-- Claims walked past every leased row at the head of a batch, each a heap fetch to read its
-- lease end (with the first 50,000 rows of a 100k batch leased: 50,000 rows and 13 ms a
-- claim). The one index by batch is now two partial ones, and each row is in exactly one:
-- the rows never leased or given back (lease_token = 0: runnable whatever the time) in claim
-- order, and the leased rows by lease end (runnable once it has passed). A claim reads from
-- both only what it takes. The price: leasing, renewing and releasing change an indexed
-- column, so those updates are no longer HOT (two index entries each).
CREATE INDEX queue_unleased ON queue (batch_pk, prefix, request_id) WHERE lease_token = 0;
CREATE INDEX queue_lease_ends ON queue (batch_pk, lease_until) WHERE lease_token <> 0;
DROP INDEX queue_by_batch_prefix;
