//! The `[[workspace_limits]]` entries of the config file: the hosted API's per-workspace
//! limits on the Message Batches API, off unless given (see
//! [`satchel_core::workspace_limits`]).
//!
//! ```toml
//! [[workspace_limits]]
//! workspace = "team-a"          # or "*": every workspace without its own entry
//! max_queued_requests = 100000  # requests not yet ended, over all its batches
//! requests_per_minute = 50      # calls to the batch routes, per node
//! ```

use std::collections::HashSet;
use std::num::NonZeroU32;

use satchel_core::workspace_limits::{WorkspaceLimit, WorkspaceLimits};
use serde::Deserialize;

use crate::config::ConfigError;

/// One `[[workspace_limits]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceLimitEntry {
    pub workspace: String,
    pub max_queued_requests: Option<u64>,
    pub requests_per_minute: Option<u32>,
}

/// The limits the entries describe; a workspace named twice, or a limit of 0, is refused.
pub fn build(entries: &[WorkspaceLimitEntry]) -> Result<WorkspaceLimits, ConfigError> {
    let mut seen = HashSet::new();
    let mut limits = Vec::with_capacity(entries.len());
    for entry in entries {
        let problem = |problem: &str| ConfigError::WorkspaceLimits {
            workspace: entry.workspace.clone(),
            problem: problem.to_owned(),
        };
        if !seen.insert(entry.workspace.as_str()) {
            return Err(problem("the workspace has two entries"));
        }
        if entry.max_queued_requests == Some(0) {
            return Err(problem(
                "`max_queued_requests` must be at least 1 (leave it out for no limit)",
            ));
        }
        let requests_per_minute = match entry.requests_per_minute {
            None => None,
            Some(n) => Some(NonZeroU32::new(n).ok_or_else(|| {
                problem("`requests_per_minute` must be at least 1 (leave it out for no limit)")
            })?),
        };
        limits.push((
            entry.workspace.clone(),
            WorkspaceLimit {
                max_queued_requests: entry.max_queued_requests,
                requests_per_minute,
            },
        ));
    }
    Ok(WorkspaceLimits::new(limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(toml: &str) -> Vec<WorkspaceLimitEntry> {
        toml::from_str::<crate::ConfigFile>(toml)
            .unwrap()
            .workspace_limits
    }

    #[test]
    fn entries_become_limits_and_mistakes_are_named() {
        let limits = build(&entries(
            "[[workspace_limits]]\nworkspace = \"a\"\nmax_queued_requests = 5\n\
             [[workspace_limits]]\nworkspace = \"*\"\nrequests_per_minute = 60\n",
        ))
        .unwrap();
        assert_eq!(limits.max_queued("a"), Some(5));
        assert_eq!(limits.max_queued("b"), None);
        let twice =
            "[[workspace_limits]]\nworkspace = \"a\"\n[[workspace_limits]]\nworkspace = \"a\"\n";
        assert_eq!(
            build(&entries(twice)).unwrap_err().to_string(),
            "workspace_limits for \"a\": the workspace has two entries"
        );
        let zero = "[[workspace_limits]]\nworkspace = \"a\"\nrequests_per_minute = 0\n";
        assert!(
            build(&entries(zero))
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
        assert!(
            toml::from_str::<crate::ConfigFile>(
                "[[workspace_limits]]\nworkspace = \"a\"\nrpm = 5\n"
            )
            .is_err()
        );
    }
}
