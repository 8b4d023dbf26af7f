//! API integration tests: each starts the real server on an ephemeral port with a fresh
//! SQLite file and speaks HTTP to it.

mod helpers;

mod auth;
mod create;
mod lifecycle;
mod list;
mod results;
