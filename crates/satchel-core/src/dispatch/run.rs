//! One leased request, from its route to its final line: wait for the route's limits, make
//! attempts, retry what may succeed, and say how it ended.
//!
//! Before each attempt the request checks that its lease is still safely its own; while it
//! has not reached the upstream yet it also checks that its batch still runs. Failures to
//! reach the upstream are the route's, not the request's: they cost no retry, and the
//! route's breaker holds everyone back until the upstream answers again.

use tokio_util::sync::CancellationToken;

use super::gate::Gate;
use super::leases::{Lease, LeaseBook};
use super::record::Outcome;
use crate::backend::{Attempt, RequestContext, Retry};
use crate::forward::UpstreamHeaders;
use crate::model::{ClaimedRequest, OutcomeKind, Settlement};
use crate::result_line;
use crate::routing::Routes;
use std::time::Duration;

/// How often a request waiting for its route checks that its batch still runs.
const RECHECK_WHILE_WAITING: Duration = Duration::from_millis(100);

/// What a request task watches besides its own work.
pub(crate) struct Signals<'a> {
    pub book: &'a LeaseBook,
    pub gate: &'a Gate,
    /// Cancelled when the node starts shutting down: no new attempt starts.
    pub stopping: &'a CancellationToken,
    /// Cancelled when the shutdown window is over: attempts in flight are abandoned.
    pub cut: &'a CancellationToken,
}

/// Runs one request on its route, with retries, and builds its outcome.
pub(crate) async fn run_one(
    routes: &Routes,
    signals: &Signals<'_>,
    lease: &Lease,
    request: ClaimedRequest,
) -> Outcome {
    let released = Outcome::Released(lease.key());
    let routed = match routes.route(&request.params) {
        Ok(routed) => routed,
        Err(failure) => return errored(&request, failure.kind, &failure.message),
    };
    let route = routed.route;
    let headers = UpstreamHeaders::from_stored(request.upstream_headers.as_deref());
    let context = RequestContext {
        batch: request.request.batch,
        custom_id: &request.custom_id,
        headers: &headers,
    };
    let mut retries = 0;
    // Until an attempt reaches the upstream, the request has not been sent: it may still be
    // given back if its batch stops.
    let mut sent = false;
    loop {
        let admitted = route.limits.admit(routed.estimated_tokens);
        tokio::pin!(admitted);
        let admission = loop {
            tokio::select! {
                admission = &mut admitted => break admission,
                () = signals.stopping.cancelled() => return released,
                () = tokio::time::sleep(RECHECK_WHILE_WAITING), if !sent => {
                    if !signals.gate.may_start(request.request.batch).await {
                        return released;
                    }
                }
            }
        };
        if !lease.may_start(signals.book) || signals.stopping.is_cancelled() {
            return released;
        }
        let started = std::time::Instant::now();
        let attempt = tokio::select! {
            attempt = route.backend.send(&request.params, &context) => attempt,
            // The shutdown window is over: the upstream's answer will not be stored.
            () = signals.cut.cancelled() => return released,
        };
        drop(admission);
        let outcome = match &attempt {
            Attempt::Message(_) => "success",
            Attempt::Failed(failure) => match failure.retry {
                Retry::Throttled { .. } => "throttled",
                Retry::Transient { .. } => "transient",
                Retry::Unreachable { .. } => "unreachable",
                Retry::Never => "rejected",
            },
        };
        route.tally.attempt(&route.name, outcome, started.elapsed());
        let failure = match attempt {
            Attempt::Message(message) => {
                route.limits.succeeded();
                let line = result_line::succeeded(&request.custom_id, &message);
                return Outcome::Settled(Settlement {
                    request: request.request,
                    kind: OutcomeKind::Succeeded,
                    line,
                });
            }
            Attempt::Failed(failure) => failure,
        };
        match failure.retry {
            Retry::Unreachable { .. } => route.limits.unreachable(),
            Retry::Throttled { .. } => {
                route.limits.reached();
                route.limits.throttled();
                sent = true;
            }
            Retry::Never | Retry::Transient { .. } => {
                route.limits.reached();
                sent = true;
            }
        }
        let own_failure = !matches!(failure.retry, Retry::Unreachable { .. });
        if !failure.is_retryable() || (own_failure && retries >= route.retry.max_retries) {
            if failure.is_retryable() {
                tracing::warn!(route = %route.name, kind = failure.kind.as_str(), attempts = retries + 1, "giving up on a request");
            }
            route.tally.failure(&route.name, failure.kind.as_str());
            return errored(&request, failure.kind, &failure.message);
        }
        if signals.stopping.is_cancelled() {
            return released;
        }
        let delay = route.retry.delay(retries, failure.retry_after());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = signals.stopping.cancelled() => return released,
        }
        route.tally.retry(&route.name);
        if own_failure {
            retries += 1;
        }
    }
}

fn errored(request: &ClaimedRequest, kind: satchel_wire::ErrorType, message: &str) -> Outcome {
    let line = result_line::errored(&request.custom_id, kind, message);
    Outcome::Settled(Settlement {
        request: request.request,
        kind: OutcomeKind::Errored,
        line,
    })
}
