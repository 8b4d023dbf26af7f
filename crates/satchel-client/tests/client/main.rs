//! The client against a real Satchel server (every route, the error cases) and against fakes
//! (retries, timeouts, odd results bodies).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod results;
mod retries;
mod routes;
mod support;
