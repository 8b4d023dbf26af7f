//! API integration tests: each starts the real server on an ephemeral port with a fresh
//! SQLite file and speaks HTTP to it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod helpers;

mod auth;
mod cors;
mod create;
mod encoding;
mod extensions;
mod http;
mod lifecycle;
mod limits;
mod list;
mod results;
