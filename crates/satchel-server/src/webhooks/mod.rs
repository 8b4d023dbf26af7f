//! Webhooks on the server side: the config file's `[[webhooks]]` and `[webhook_delivery]`
//! (checked at start), and the delivery log route
//! (`GET /v1/satchel/webhooks/deliveries`). The events, the outbox and the worker are in
//! `satchel_core::webhooks`; sending is `satchel_upstream::webhook`.

pub mod config;
pub mod log;

pub use config::{WebhookDeliverySection, WebhookEntry};
