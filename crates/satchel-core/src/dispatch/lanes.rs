//! Claims per route: each route has a lane of run slots (twice its concurrency, so the next
//! requests are ready when one finishes), and a claim for a lane takes only requests whose
//! model (recorded at ingest) that route serves. A route held back by its rate limits or an
//! outage fills its own lane and no more: its waiting requests hold no slot another route
//! could use, and a request is leased only shortly before its route can start it.
//!
//! Requests whose model no route serves (or that name none) have a small lane of their own:
//! they end `errored` at once. With a single catch-all route there is one lane for everything
//! and claims don't look at models.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::model::{ModelFilter, NO_MODEL};
use crate::routing::Routes;
use crate::store::{Store, StoreError};

/// Slots of the lane for requests no route serves.
const UNROUTED_SLOTS: usize = 64;

/// How often the model → lane mapping is read again when nothing new was created.
const MODELS_FRESHNESS: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) struct Lane {
    slots: Arc<Semaphore>,
    pub filter: ModelFilter,
}

impl Lane {
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }

    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

pub(crate) struct Lanes {
    lanes: Vec<Lane>,
    /// Whether lanes are per route (else one lane, `ModelFilter::Any`).
    per_route: bool,
    read_at: Option<Instant>,
}

impl Lanes {
    pub fn new(routes: &Routes, max_in_flight: usize) -> Self {
        let lane = |slots: usize, filter| Lane {
            slots: Arc::new(Semaphore::new(slots.clamp(1, max_in_flight.max(1)))),
            filter,
        };
        if routes.is_catch_all() {
            return Self {
                lanes: vec![lane(max_in_flight, ModelFilter::Any)],
                per_route: false,
                read_at: None,
            };
        }
        let mut lanes: Vec<Lane> = routes
            .routes()
            .map(|r| {
                lane(
                    2 * r.limits.max_concurrency(),
                    ModelFilter::Only(Vec::new()),
                )
            })
            .collect();
        lanes.push(lane(UNROUTED_SLOTS, ModelFilter::Only(vec![NO_MODEL])));
        Self {
            lanes,
            per_route: true,
            read_at: None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.iter()
    }

    /// Reads the models recorded so far and gives each to the lane of the route serving it,
    /// if `fresh` (something was created) or the last reading is old.
    pub async fn refresh(
        &mut self,
        routes: &Routes,
        store: &dyn Store,
        fresh: bool,
    ) -> Result<(), StoreError> {
        if !self.per_route
            || (!fresh
                && self
                    .read_at
                    .is_some_and(|at| at.elapsed() < MODELS_FRESHNESS))
        {
            return Ok(());
        }
        let models = store.models().await?;
        let unrouted = self.lanes.len() - 1;
        let mut by_lane: HashMap<usize, Vec<i64>> = HashMap::new();
        by_lane.entry(unrouted).or_default().push(NO_MODEL);
        for (id, name) in models {
            let lane = routes.index_of(&name).unwrap_or(unrouted);
            by_lane.entry(lane).or_default().push(id);
        }
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let mut ids = by_lane.remove(&i).unwrap_or_default();
            ids.sort_unstable();
            lane.filter = ModelFilter::Only(ids);
        }
        self.read_at = Some(Instant::now());
        Ok(())
    }
}
