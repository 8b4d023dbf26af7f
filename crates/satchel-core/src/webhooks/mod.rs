//! Webhooks in Anthropic's own format (Standard Webhooks signatures, the `event` envelope),
//! delivered at least once from a durable outbox in the store.
//!
//! - [`outbox`]: the records and the [`Outbox`] seam each store engine implements. The
//!   store records an event in the same transaction that ends a batch; deliveries (one per
//!   event and matching endpoint) are leased, attempted and recorded through it.
//! - [`envelope`]: the JSON body, built the same way at every attempt.
//! - [`sign`]: the `webhook-*` headers (HMAC-SHA256 with the endpoint's `whsec_` secret).
//! - [`policy`]: what an attempt's outcome means (delivered, retry when, or give up).
//! - [`worker`]: the loop that fans events out, claims due deliveries and sends them
//!   through a [`Sender`] (the HTTP side lives in `satchel-upstream`).

pub mod envelope;
pub mod outbox;
pub mod policy;
pub mod sign;
pub mod worker;

use std::time::Duration;

pub use outbox::{
    AttemptRecord, ClaimedDelivery, DeliveryFilter, DeliveryKey, DeliveryRecord, DeliveryState,
    EventRecord, Outbox, Subscription,
};
pub use sign::{SecretError, SigningKey};
pub use worker::{SendOutcome, Sender, WebhookWorker};

/// The event recorded when a batch ends (its `processing_status` became `ended`).
pub const MESSAGE_BATCH_ENDED: &str = "message_batch.ended";

/// Every event type Satchel emits (what an endpoint's `events` may name).
pub const EVENT_TYPES: &[&str] = &[MESSAGE_BATCH_ENDED];

/// One configured endpoint (`[[webhooks]]`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub workspace: String,
    pub url: String,
    pub key: SigningKey,
    pub events: Vec<String>,
    /// Whether the URL may resolve to a private, loopback or link-local address.
    pub allow_private_targets: bool,
}

impl Endpoint {
    pub fn subscription(&self) -> Subscription {
        Subscription {
            workspace: self.workspace.clone(),
            url: self.url.clone(),
            events: self.events.clone(),
        }
    }
}

/// How deliveries are made and retried.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub endpoints: Vec<Endpoint>,
    /// The `organization_id` in each event's `data` (Satchel has no organizations: one value
    /// for the whole server).
    pub organization_id: String,
    /// Attempts per delivery, the first included, before it is marked failed.
    pub max_attempts: u32,
    /// After this long since the event, a delivery is no longer retried.
    pub max_age: Duration,
    /// The first retry's delay; doubling (with jitter) up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// One attempt's whole time (connect, send, answer).
    pub timeout: Duration,
    /// How often the outbox is looked at for new events and due retries.
    pub poll_interval: Duration,
    /// Events and deliveries older than this are removed from the log.
    pub log_retention: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            organization_id: DEFAULT_ORGANIZATION_ID.to_owned(),
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(3600),
            timeout: Duration::from_secs(15),
            poll_interval: Duration::from_millis(500),
            log_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The `organization_id` events carry unless configured.
pub const DEFAULT_ORGANIZATION_ID: &str = "org_satchel";
