//! Housekeeping: the clock-driven parts of the lifecycle.
//!
//! Each step ends the requests that can no longer run (past `expires_at` → `expired`; in a
//! canceling batch → `canceled`, e.g. leases released after a crash) and purges the results of
//! batches past the retention window, setting `archived_at`. [`Housekeeper::step`] is exposed
//! so tests can drive it without sleeping.

use std::sync::Arc;
use std::time::Duration;

use satchel_wire::Timestamp;
use tokio::task::JoinHandle;

use crate::store::{Store, StoreError};

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    pub requests_ended: u64,
    pub batches_archived: u64,
}

pub struct Housekeeper {
    store: Arc<dyn Store>,
    retention: Duration,
    tick: Duration,
}

impl Housekeeper {
    pub fn new(store: Arc<dyn Store>, retention: Duration, tick: Duration) -> Self {
        Self {
            store,
            retention,
            tick,
        }
    }

    pub async fn step(&self, now: Timestamp) -> Result<StepReport, StoreError> {
        let requests_ended = self.store.sweep_unrunnable(now).await?;
        let batches_archived = self.store.archive(now.minus(self.retention), now).await?;
        Ok(StepReport {
            requests_ended,
            batches_archived,
        })
    }

    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.step(Timestamp::now()).await {
                    Ok(report) if report != StepReport::default() => {
                        tracing::info!(?report, "housekeeping");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "housekeeping failed"),
                }
                tokio::time::sleep(self.tick).await;
            }
        })
    }
}
