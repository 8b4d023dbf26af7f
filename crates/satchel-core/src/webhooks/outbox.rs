//! The outbox seam: what a store engine keeps for webhooks, and the rules it must honour.
//!
//! - An event is recorded in the same transaction that ends its batch (whatever ends it:
//!   the last settle, a sweep of an expired or canceling batch, a cancel with nothing in
//!   flight), so an ended batch always has its event, across any crash.
//! - [`Outbox::fan_out`] turns each new event into one delivery per subscription that wants
//!   it, once (several nodes may fan out at the same time).
//! - A delivery is leased to one node at a time ([`Outbox::claim_deliveries`]); each claim
//!   counts an attempt, and the attempt number is the lease's fencing token: only the
//!   current attempt may record its outcome ([`Outbox::record_attempt`]). A lease that runs
//!   out (its node died mid-send) makes the delivery due again: at least once.
//! - Every query of the log is scoped by workspace.

use async_trait::async_trait;
use satchel_wire::Timestamp;

use crate::store::StoreError;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The event's id (`webhook-id` and the envelope's `id`): the same at every attempt.
    pub id: String,
    /// e.g. `message_batch.ended`.
    pub kind: String,
    pub batch_id: String,
    pub workspace: String,
    pub created_at: Timestamp,
}

/// Who wants which events: an endpoint as the outbox sees it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub workspace: String,
    pub url: String,
    pub events: Vec<String>,
}

impl Subscription {
    pub fn wants(&self, event: &EventRecord) -> bool {
        self.workspace == event.workspace && self.events.contains(&event.kind)
    }
}

/// A leased delivery: `attempt` is this attempt's number (1 for the first), its lease token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryKey {
    pub delivery: i64,
    pub attempt: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub key: DeliveryKey,
    pub url: String,
    pub event: EventRecord,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet: due at `next_attempt_at`.
    Pending,
    Delivered,
    /// Given up: a final answer, or out of attempts or time.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// What one attempt came to, as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why it did not succeed, for the log (never a secret).
    pub error: Option<String>,
    pub state: DeliveryState,
    /// When a pending delivery is due again.
    pub next_attempt_at: Option<Timestamp>,
}

/// One row of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery: i64,
    pub event: EventRecord,
    pub url: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub last_attempt_at: Option<Timestamp>,
    pub next_attempt_at: Option<Timestamp>,
}

/// Which deliveries the log shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub batch_id: Option<String>,
    /// Only deliveries with a smaller id (paging backwards, newest first).
    pub before: Option<i64>,
}

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Creates one delivery (due at once) for each event not yet fanned out and each
    /// subscription that [wants](Subscription::wants) it, and marks those events fanned
    /// out; at most `limit` events in one call. Returns how many events it handled.
    async fn fan_out(
        &self,
        subscriptions: &[Subscription],
        limit: usize,
        now: Timestamp,
    ) -> Result<usize, StoreError>;

    /// Leases up to `max` pending deliveries that are due (`next_attempt_at <= now`) and not
    /// leased (or whose lease ran out) to `owner` until `until`, counting an attempt each.
    async fn claim_deliveries(
        &self,
        owner: &str,
        max: usize,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Gives back the deliveries `owner` holds, at that node's start: they are its previous
    /// life's (cut short by a crash or a stop), so they are due again at once rather than
    /// when their leases run out. Returns how many.
    async fn release_deliveries(&self, owner: &str) -> Result<u64, StoreError>;

    /// Records an attempt's outcome if `key` is still the delivery's current attempt and it
    /// is still pending; returns whether it did.
    async fn record_attempt(
        &self,
        key: DeliveryKey,
        outcome: AttemptRecord,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The workspace's deliveries, newest first, at most `limit` (plus one if more exist).
    async fn deliveries(
        &self,
        workspace: &str,
        filter: &DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Removes events created before `before` with their deliveries, except deliveries still
    /// pending. Returns how many events it removed.
    async fn purge_webhooks(&self, before: Timestamp) -> Result<u64, StoreError>;
}
