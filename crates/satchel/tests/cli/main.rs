#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

//! `satchel batch …` as a real process against a real `satchel serve` process: the README's
//! walk-through, every command, local validation, the error lines and the exit statuses.
//! `flow.rs`: the commands doing their work; `errors.rs`: refusals, error lines, exit
//! statuses and help.

#[path = "../support/mod.rs"]
mod support;

mod errors;
mod flow;
mod helpers;
