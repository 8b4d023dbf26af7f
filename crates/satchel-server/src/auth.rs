//! API keys: which key belongs to which workspace, and checking a request's key.
//!
//! Keys come from the config file (key → workspace) and from `SATCHEL_API_KEYS` (keys of the
//! default workspace). With none configured the server runs open (any key, workspace
//! `default`), which `app` only allows on a loopback address.

use std::collections::HashMap;

use axum::http::HeaderMap;

/// The workspace of keys given without one.
pub const DEFAULT_WORKSPACE: &str = "default";

#[derive(Debug, Clone, Default)]
pub struct Keys {
    workspaces: HashMap<String, String>,
}

/// Why a request's key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    Missing,
    Unknown,
}

/// One key configured for two workspaces: which would it open? The message names the
/// workspaces, never the key (it goes to logs and terminals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the same API key is configured for workspace {first:?} and for workspace {second:?}; \
     a key must belong to one workspace"
)]
pub struct KeyConflict {
    pub first: String,
    pub second: String,
}

impl Keys {
    /// Adds `key` for `workspace`. The same key again for the same workspace is harmless;
    /// for another workspace it is refused rather than one silently winning.
    pub fn add(
        &mut self,
        key: impl Into<String>,
        workspace: impl Into<String>,
    ) -> Result<(), KeyConflict> {
        let workspace = workspace.into();
        match self.workspaces.entry(key.into()) {
            std::collections::hash_map::Entry::Occupied(known) if *known.get() != workspace => {
                Err(KeyConflict {
                    first: known.get().clone(),
                    second: workspace,
                })
            }
            std::collections::hash_map::Entry::Occupied(_) => Ok(()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(workspace);
                Ok(())
            }
        }
    }

    /// No key configured: any key is accepted.
    pub fn is_open(&self) -> bool {
        self.workspaces.is_empty()
    }

    pub fn len(&self) -> usize {
        self.workspaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workspaces.is_empty()
    }

    /// The workspace of the request's key, read from `x-api-key` or `Authorization: Bearer`.
    pub fn workspace_of(&self, headers: &HeaderMap) -> Result<&str, KeyProblem> {
        let key = presented_key(headers).ok_or(KeyProblem::Missing)?;
        if self.is_open() {
            return Ok(DEFAULT_WORKSPACE);
        }
        self.workspaces
            .get(key)
            .map(String::as_str)
            .ok_or(KeyProblem::Unknown)
    }
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let key = key.trim();
        if !key.is_empty() {
            return Some(key);
        }
    }
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok())?;
    let (scheme, token) = bearer.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn both_auth_styles_map_to_the_key_workspace() {
        let mut keys = Keys::default();
        keys.add("sk-a", "team-a").unwrap();
        assert_eq!(
            keys.workspace_of(&headers(&[("x-api-key", "sk-a")])),
            Ok("team-a")
        );
        assert_eq!(
            keys.workspace_of(&headers(&[("authorization", "Bearer sk-a")])),
            Ok("team-a")
        );
        assert_eq!(
            keys.workspace_of(&headers(&[("x-api-key", "sk-b")])),
            Err(KeyProblem::Unknown)
        );
        assert_eq!(keys.workspace_of(&headers(&[])), Err(KeyProblem::Missing));
        assert_eq!(
            keys.workspace_of(&headers(&[("authorization", "Basic sk-a")])),
            Err(KeyProblem::Missing)
        );
    }

    #[test]
    fn one_key_under_two_workspaces_is_refused_naming_both_workspaces() {
        let mut keys = Keys::default();
        keys.add("sk-shared", "team-a").unwrap();
        keys.add("sk-shared", "team-a").unwrap();
        let conflict = keys.add("sk-shared", "team-b").unwrap_err();
        let message = conflict.to_string();
        assert!(
            message.contains("\"team-a\"") && message.contains("\"team-b\""),
            "{message}"
        );
        assert!(!message.contains("sk-shared"), "{message}");
        assert_eq!(
            keys.workspace_of(&headers(&[("x-api-key", "sk-shared")])),
            Ok("team-a")
        );
    }

    #[test]
    fn open_mode_takes_any_key_but_still_needs_one() {
        let keys = Keys::default();
        assert_eq!(
            keys.workspace_of(&headers(&[("x-api-key", "anything")])),
            Ok(DEFAULT_WORKSPACE)
        );
        assert_eq!(keys.workspace_of(&headers(&[])), Err(KeyProblem::Missing));
    }
}
