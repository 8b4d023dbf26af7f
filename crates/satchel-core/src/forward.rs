//! The headers of a create call that apply to every request of its batch, and so go upstream
//! with each of them: the client's `anthropic-version`, `anthropic-beta` and
//! `anthropic-user-profile-id`. Read once at create, kept with the batch as a small JSON
//! object ([`NewBatch::upstream_headers`](crate::model::NewBatch)), handed to the backend with
//! every attempt ([`ClaimedRequest::upstream_headers`](crate::model::ClaimedRequest)). Only
//! Anthropic-format backends send them; the OpenAI format has no equivalent.

use serde::{Deserialize, Serialize};

/// The forwarded headers of one batch. Names on the wire and in the stored JSON are the
/// headers' own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamHeaders {
    #[serde(
        rename = "anthropic-version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    #[serde(
        rename = "anthropic-beta",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub beta: Option<String>,
    #[serde(
        rename = "anthropic-user-profile-id",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_profile_id: Option<String>,
}

impl UpstreamHeaders {
    /// From a create call's headers: `values(name)` gives every value of a header as text
    /// (values that are not visible ASCII are not forwarded). Repeated `anthropic-beta`
    /// headers become one comma-separated list, as the API reads them.
    pub fn from_request<'a, I>(values: impl Fn(&'static str) -> I) -> Self
    where
        I: Iterator<Item = &'a str>,
    {
        let joined = |name: &'static str| {
            let parts: Vec<&str> = values(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect();
            (!parts.is_empty()).then(|| parts.join(","))
        };
        Self {
            version: joined("anthropic-version"),
            beta: joined("anthropic-beta"),
            user_profile_id: joined("anthropic-user-profile-id"),
        }
    }

    /// As stored with the batch: a JSON object, or `None` when there is nothing to forward.
    pub fn to_stored(&self) -> Option<String> {
        if *self == Self::default() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// From what the store kept. Batches stored before headers were kept have none; a value
    /// that does not parse (never written by Satchel) forwards nothing rather than failing
    /// the request.
    pub fn from_stored(stored: Option<&str>) -> Self {
        match stored {
            None => Self::default(),
            Some(text) => serde_json::from_str(text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "a batch's stored upstream headers do not parse; none are forwarded");
                Self::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &'static [(&'static str, &'static str)]) -> UpstreamHeaders {
        UpstreamHeaders::from_request(|name| {
            pairs
                .iter()
                .filter(move |(k, _)| *k == name)
                .map(|(_, v)| *v)
        })
    }

    #[test]
    fn read_joined_and_round_tripped() {
        let h = headers(&[
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "files-api-2025-04-14"),
            ("anthropic-beta", " context-1m-2025-08-07 "),
            ("anthropic-user-profile-id", "prof_1"),
            ("x-api-key", "sk-secret"),
        ]);
        assert_eq!(h.version.as_deref(), Some("2023-06-01"));
        assert_eq!(
            h.beta.as_deref(),
            Some("files-api-2025-04-14,context-1m-2025-08-07")
        );
        assert_eq!(h.user_profile_id.as_deref(), Some("prof_1"));
        let stored = h.to_stored().unwrap();
        assert!(!stored.contains("sk-secret"), "{stored}");
        assert_eq!(UpstreamHeaders::from_stored(Some(&stored)), h);
    }

    #[test]
    fn nothing_to_forward_stores_nothing() {
        assert_eq!(headers(&[("anthropic-beta", "  ")]).to_stored(), None);
        assert_eq!(
            UpstreamHeaders::from_stored(None),
            UpstreamHeaders::default()
        );
        assert_eq!(
            UpstreamHeaders::from_stored(Some("not json")),
            UpstreamHeaders::default()
        );
    }
}
