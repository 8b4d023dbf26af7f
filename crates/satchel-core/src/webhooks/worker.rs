//! The delivery loop: each step fans new events out to the endpoints that want them, claims
//! the deliveries that are due, sends them concurrently and records each outcome. Runs on
//! every node; the store's leases keep two nodes from sending one delivery at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use satchel_wire::Timestamp;
use tokio::task::JoinHandle;

use super::outbox::{AttemptRecord, ClaimedDelivery, DeliveryState, Outbox};
use super::{Endpoint, WebhookConfig, envelope, policy};
use crate::store::StoreError;

/// What sending one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The endpoint answered (any status), with its `retry-after` if it gave one.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, DNS failure, timeout.
    Unreachable { error: String },
    /// Not sent: the target is not allowed (the SSRF policy).
    Refused { reason: String },
}

/// Sends one signed POST (the HTTP side, in `satchel-upstream`).
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    /// POSTs `body` (JSON) with `headers` to `url`. Unless `allow_private_targets`, refuses a
    /// URL whose host is, or resolves to, a private, loopback or link-local address.
    async fn send(
        &self,
        url: &str,
        allow_private_targets: bool,
        headers: &[(&'static str, String)],
        body: String,
    ) -> SendOutcome;
}

/// Deliveries claimed in one step.
const CLAIM_MAX: usize = 32;
/// Events fanned out in one step.
const FAN_OUT_MAX: usize = 256;
/// A lease outlasts an attempt's timeout by this much (time to record the outcome).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How often old events and deliveries are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

pub struct WebhookWorker {
    outbox: Arc<dyn Outbox>,
    sender: Arc<dyn Sender>,
    config: Arc<WebhookConfig>,
    owner: String,
}

impl WebhookWorker {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        sender: Arc<dyn Sender>,
        config: WebhookConfig,
        owner: String,
    ) -> Self {
        Self {
            outbox,
            sender,
            config: Arc::new(config),
            owner,
        }
    }

    /// One round: fan out, claim what is due, send it, record the outcomes. Returns how
    /// many deliveries it attempted.
    pub async fn step(&self) -> Result<usize, StoreError> {
        let subscriptions: Vec<_> = self
            .config
            .endpoints
            .iter()
            .map(Endpoint::subscription)
            .collect();
        let now = Timestamp::now();
        self.outbox
            .fan_out(&subscriptions, FAN_OUT_MAX, now)
            .await?;
        let until = now.plus(self.config.timeout + LEASE_MARGIN);
        let claimed = self
            .outbox
            .claim_deliveries(&self.owner, CLAIM_MAX, now, until)
            .await?;
        let attempted = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|d| self.deliver(d))).await;
        Ok(attempted)
    }

    async fn deliver(&self, delivery: ClaimedDelivery) {
        let endpoint = self
            .config
            .endpoints
            .iter()
            .find(|e| e.workspace == delivery.event.workspace && e.url == delivery.url);
        let outcome = match endpoint {
            Some(endpoint) => {
                let body = envelope::body(&delivery.event, &self.config.organization_id);
                let sent_at = Timestamp::now().as_micros() / 1_000_000;
                let headers = endpoint.key.headers(&delivery.event.id, sent_at, &body);
                let outcome = self
                    .sender
                    .send(
                        &delivery.url,
                        endpoint.allow_private_targets,
                        &headers,
                        body,
                    )
                    .await;
                policy::judge(
                    &self.config,
                    &outcome,
                    delivery.key.attempt,
                    delivery.event.created_at,
                    Timestamp::now(),
                )
            }
            None => AttemptRecord {
                status: None,
                error: Some("the endpoint is no longer configured".into()),
                state: DeliveryState::Failed,
                next_attempt_at: None,
            },
        };
        let state = outcome.state;
        tracing::info!(
            event = %delivery.event.id,
            batch_id = %delivery.event.batch_id,
            attempt = delivery.key.attempt,
            status = ?outcome.status,
            error = outcome.error.as_deref().unwrap_or(""),
            state = state.as_str(),
            "webhook attempt"
        );
        match self
            .outbox
            .record_attempt(delivery.key, outcome, Timestamp::now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(event = %delivery.event.id, "a webhook attempt's lease was lost before its outcome was stored")
            }
            // The lease runs out and the delivery is attempted again: at least once.
            Err(e) => {
                tracing::warn!(error = %e, event = %delivery.event.id, "storing a webhook attempt failed")
            }
        }
    }

    /// Runs steps until aborted: at once again while there is more due, else after the
    /// poll interval.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            match self.outbox.release_deliveries(&self.owner).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    released = n,
                    "webhook deliveries this node was sending when it stopped are due again"
                ),
                Err(e) => tracing::warn!(error = %e, "releasing this node's webhook leases failed"),
            }
            let mut last_purge: Option<Instant> = None;
            loop {
                if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                    let before = Timestamp::now().minus(self.config.log_retention);
                    match self.outbox.purge_webhooks(before).await {
                        Ok(_) => last_purge = Some(Instant::now()),
                        Err(e) => tracing::warn!(error = %e, "purging old webhook events failed"),
                    }
                }
                let busy = match self.step().await {
                    Ok(attempted) => attempted == CLAIM_MAX,
                    Err(e) => {
                        tracing::warn!(error = %e, "the webhook outbox could not be read");
                        false
                    }
                };
                if !busy {
                    tokio::time::sleep(self.config.poll_interval).await;
                }
            }
        })
    }
}
