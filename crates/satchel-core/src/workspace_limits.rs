//! Per-workspace limits, as the hosted API has them for the Message Batches API (its
//! rate-limits page): how many requests a workspace may have in the processing queue, and
//! how many calls a minute it may make to the batch routes. Off unless configured.
//!
//! Calls are counted by a token bucket per workspace on this node (governor): up to N at
//! once, then one more every 60/N seconds. Nodes sharing a store count apart, so a
//! workspace may make up to N calls a minute to each node. The queue is the store's: a
//! create whose requests would take it over its limit is refused when its body has been
//! read whole, before the batch becomes visible, so nothing of it is kept. Commits of one
//! workspace's creates are taken one at a time on a node, so two creates on one node cannot
//! both squeeze under the limit; creates on different nodes finishing at the same moment
//! can.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// How long a client refused for a full queue is told to wait: the queue drains as the
/// requests before it run, which no one can foretell.
pub const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The limits of one workspace; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkspaceLimit {
    /// Most requests in the processing queue (not yet ended), over all its batches.
    pub max_queued_requests: Option<u64>,
    /// Most calls a minute to the batch routes, on this node.
    pub requests_per_minute: Option<NonZeroU32>,
}

/// A call refused by a workspace's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    #[error(
        "This request would exceed your workspace's rate limit of {per_minute} requests per minute to the Message Batches API. Please retry after {} seconds.",
        retry_after.as_secs()
    )]
    Calls {
        per_minute: u32,
        retry_after: Duration,
    },
    #[error(
        "This batch of {batch} requests would exceed your workspace's limit of {limit} requests in the Message Batches processing queue ({queued} queued now). Retry once some of them have ended."
    )]
    Queue {
        batch: u64,
        limit: u64,
        queued: u64,
        retry_after: Duration,
    },
}

impl OverLimit {
    /// What the `retry-after` header says.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Calls { retry_after, .. } | Self::Queue { retry_after, .. } => *retry_after,
        }
    }
}

/// The configured limits, and their state on this node.
#[derive(Default)]
pub struct WorkspaceLimits {
    by_workspace: HashMap<String, WorkspaceLimit>,
    /// For workspaces without their own entry (`workspace = "*"`).
    others: WorkspaceLimit,
    calls: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    commits: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for WorkspaceLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceLimits")
            .field("by_workspace", &self.by_workspace)
            .field("others", &self.others)
            .finish_non_exhaustive()
    }
}

impl WorkspaceLimits {
    /// `limits` by workspace name; the name `*` stands for every workspace not named.
    pub fn new(limits: impl IntoIterator<Item = (String, WorkspaceLimit)>) -> Self {
        let mut by_workspace: HashMap<String, WorkspaceLimit> = limits.into_iter().collect();
        let others = by_workspace.remove("*").unwrap_or_default();
        Self {
            by_workspace,
            others,
            ..Self::default()
        }
    }

    fn limit(&self, workspace: &str) -> WorkspaceLimit {
        self.by_workspace
            .get(workspace)
            .copied()
            .unwrap_or(self.others)
    }

    /// Counts a call of `workspace` to the batch routes, or refuses it.
    pub fn admit_call(&self, workspace: &str) -> Result<(), OverLimit> {
        let Some(per_minute) = self.limit(workspace).requests_per_minute else {
            return Ok(());
        };
        let limiter = self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(workspace.to_owned())
            .or_insert_with(|| Arc::new(RateLimiter::direct(Quota::per_minute(per_minute))))
            .clone();
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            OverLimit::Calls {
                per_minute: per_minute.get(),
                // Whole seconds, rounded up: the header has no fractions the SDKs all read.
                retry_after: Duration::from_secs(
                    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                ),
            }
        })
    }

    /// The most requests `workspace` may have queued, if limited.
    pub fn max_queued(&self, workspace: &str) -> Option<u64> {
        self.limit(workspace).max_queued_requests
    }

    /// The lock a create of `workspace` holds from its queue check to its commit.
    pub(crate) fn commit_lock(&self, workspace: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(workspace.to_owned())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> WorkspaceLimits {
        WorkspaceLimits::new([
            (
                "small".to_owned(),
                WorkspaceLimit {
                    max_queued_requests: Some(10),
                    requests_per_minute: NonZeroU32::new(2),
                },
            ),
            (
                "*".to_owned(),
                WorkspaceLimit {
                    max_queued_requests: Some(1000),
                    requests_per_minute: None,
                },
            ),
        ])
    }

    #[test]
    fn calls_over_the_rate_are_refused_with_a_wait() {
        let limits = limits();
        assert!(limits.admit_call("small").is_ok());
        assert!(limits.admit_call("small").is_ok());
        let refused = limits.admit_call("small").unwrap_err();
        assert!(matches!(refused, OverLimit::Calls { per_minute: 2, .. }));
        // One call every 30 s comes back.
        assert!(
            (1..=31).contains(&refused.retry_after().as_secs()),
            "{refused:?}"
        );
        // Workspaces are counted apart; "*" sets no rate here.
        for _ in 0..100 {
            assert!(limits.admit_call("big").is_ok());
        }
    }

    #[test]
    fn named_workspaces_take_their_entry_and_others_the_star() {
        let limits = limits();
        assert_eq!(limits.max_queued("small"), Some(10));
        assert_eq!(limits.max_queued("anyone"), Some(1000));
        assert_eq!(WorkspaceLimits::default().max_queued("anyone"), None);
        assert!(WorkspaceLimits::default().admit_call("anyone").is_ok());
    }
}
