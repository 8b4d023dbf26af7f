//! Satchel's domain and engine: everything about batches that is neither HTTP nor SQL.
//!
//! - [`lifecycle`]: the batch lifecycle rules and the operations the API calls ([`Batches`]).
//! - [`partial`], [`rerun`]: extensions: results while a batch runs, re-running what failed.
//! - [`ingest`]: the streaming parser and validator of a create body.
//! - [`store`]: the [`Store`] seam that every storage engine implements.
//! - [`backend`], [`emulator`]: the [`Backend`] seam a request runs through, and the built-in
//!   deterministic fake model.
//! - [`forward`]: the create call's headers that go upstream with every request of its batch.
//! - [`routing`], [`limits`]: which backend runs a request (by `model`), under which
//!   concurrency, rate limits and retry policy.
//! - [`dispatch`]: leases pending requests, runs them on their route, group-commits results.
//! - [`housekeeping`]: expiry at `expires_at`, the retention purge, lease recovery.
//! - [`observe`]: the names (and help) of the metrics.

pub mod backend;
pub mod dispatch;
pub mod emulator;
pub mod fairness;
pub mod forward;
pub mod housekeeping;
pub mod ingest;
pub mod lifecycle;
pub mod limits;
pub mod model;
pub mod observe;
pub mod partial;
pub mod prefix;
pub mod rerun;
pub mod result_line;
pub mod routing;
pub mod store;
pub mod webhooks;
pub mod workspace_limits;

pub use backend::{Attempt, Backend, Failure, RequestContext, Retry};
pub use forward::UpstreamHeaders;
pub use lifecycle::{BatchError, Batches, LifecycleConfig};
pub use store::{Store, StoreError};
