//! One `[[backends]]` entry of the config file, typed: what every backend has (name,
//! models, limits, retry policy) and, by `kind`, what only that kind has (an emulator has no
//! URL or HTTP timeout; only an Anthropic backend pins an `anthropic-version`). Durations are
//! read by `humantime-serde` (`500ms`, `10s`, `5m`). The defaults are those of the crates
//! that use them, referenced here, never restated.

use std::num::NonZeroU32;
use std::time::Duration;

use satchel_core::limits::{DEFAULT_MAX_CONCURRENCY, RetryPolicy};
use satchel_upstream::http::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// One `[[backends]]` entry: a model server, the models it serves and its limits.
///
/// Unknown fields are refused by the kind's own table (`kind` decides which fields exist),
/// so `timeout` on an emulator is an error rather than ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct BackendEntry {
    pub name: String,
    /// Model name patterns (`*`, `?`) this backend serves; the first backend that matches
    /// a request's `model` runs it.
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Requests per minute, evenly spaced; unlimited when absent (0 is refused).
    pub requests_per_minute: Option<NonZeroU32>,
    /// Estimated tokens per minute; unlimited when absent (0 is refused).
    pub tokens_per_minute: Option<NonZeroU32>,
    /// Retries after the first attempt, for 429, 529, 5xx, timeouts and connection errors.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First retry backoff (doubling, with jitter, up to `max_backoff`), e.g. `500ms`.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// What runs the requests, and the settings only that kind has.
    #[serde(flatten)]
    pub kind: BackendKind,
}

/// The kinds of backend, by the entry's `kind` field, each with its own settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendKind {
    /// A server speaking the Messages API: `params` posted as received.
    Anthropic(AnthropicEntry),
    /// A server speaking Chat Completions: `params` translated.
    Openai(HttpEntry),
    /// The built-in fake model.
    Emulator(EmulatorEntry),
}

impl BackendKind {
    /// The kind's name as the config file spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Anthropic(_) => "anthropic",
            Self::Openai(_) => "openai",
            Self::Emulator(_) => "emulator",
        }
    }
}

/// Where an HTTP backend is and how long its calls may take; `Pin` is the type of the
/// `anthropic-version` it may pin: a `String` for `kind = "anthropic"`, [`NoPin`] (no value
/// at all) for the others.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpEntry<Pin = NoPin> {
    /// `http(s)://host:port`, with or without a trailing `/v1`.
    pub base_url: String,
    /// The environment variable holding the backend's API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Per attempt, e.g. `120s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The `anthropic-version` sent upstream whatever the client's (by default each batch's
    /// requests go with the version its create call sent).
    pub anthropic_version: Option<Pin>,
}

/// `kind = "anthropic"`: an HTTP backend that may pin the `anthropic-version`.
pub type AnthropicEntry = HttpEntry<String>;

/// The `anthropic_version` of a kind that cannot pin one: a type with no values, so the field
/// can only be absent, and giving it is refused by name.
#[derive(Debug, Clone, PartialEq)]
pub enum NoPin {}

impl<'de> Deserialize<'de> for NoPin {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(D::Error::custom(
            "`anthropic_version` is only for kind = \"anthropic\"",
        ))
    }
}

/// `kind = "emulator"`: the fake model's knobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorEntry {
    /// Time per request, e.g. `50ms`.
    #[serde(default, with = "humantime_serde")]
    pub latency: Duration,
    /// Share of requests failed with api_error / overloaded_error, from 0 to 1.
    #[serde(default)]
    pub error_rate: f64,
    /// A JSONL file of scripted replies (default: `--emulator-fixtures`).
    pub fixtures: Option<std::path::PathBuf>,
}

fn all_models() -> Vec<String> {
    vec!["*".to_owned()]
}
fn default_max_concurrency() -> usize {
    DEFAULT_MAX_CONCURRENCY
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_max_retries() -> u32 {
    RetryPolicy::default().max_retries
}
fn default_initial_backoff() -> Duration {
    RetryPolicy::default().initial_backoff
}
fn default_max_backoff() -> Duration {
    RetryPolicy::default().max_backoff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(toml_text: &str) -> Result<BackendEntry, String> {
        #[derive(Deserialize)]
        struct File {
            backends: Vec<BackendEntry>,
        }
        toml::from_str::<File>(toml_text)
            .map(|mut f| f.backends.remove(0))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_has_its_own_fields_and_the_defaults() {
        let e = entry("[[backends]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"http://h\"\n")
            .unwrap();
        assert_eq!(e.models, ["*"]);
        assert_eq!(e.max_concurrency, DEFAULT_MAX_CONCURRENCY);
        assert_eq!(e.max_retries, RetryPolicy::default().max_retries);
        assert_eq!(e.initial_backoff, RetryPolicy::default().initial_backoff);
        let BackendKind::Openai(http) = e.kind else {
            panic!("{:?}", e.kind)
        };
        assert_eq!(http.timeout, DEFAULT_TIMEOUT);
        assert_eq!(http.connect_timeout, DEFAULT_CONNECT_TIMEOUT);

        let e = entry(
            "[[backends]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"http://h\"\n\
             timeout = \"2m\"\nanthropic_version = \"2023-06-01\"\ninitial_backoff = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(e.initial_backoff, Duration::from_millis(250));
        let BackendKind::Anthropic(a) = &e.kind else {
            panic!("{:?}", e.kind)
        };
        assert_eq!(a.timeout, Duration::from_secs(120));
        assert_eq!(a.anthropic_version.as_deref(), Some("2023-06-01"));

        let e = entry(
            "[[backends]]\nname = \"a\"\nkind = \"emulator\"\nlatency = \"50ms\"\nerror_rate = 0.5\n",
        )
        .unwrap();
        assert_eq!(
            e.kind,
            BackendKind::Emulator(EmulatorEntry {
                latency: Duration::from_millis(50),
                error_rate: 0.5,
                fixtures: None,
            })
        );
    }

    #[test]
    fn a_field_of_another_kind_or_a_bad_duration_is_refused() {
        for (text, expected) in [
            (
                "kind = \"emulator\"\ntimeout = \"5s\"\n",
                "unknown field `timeout`",
            ),
            (
                "kind = \"emulator\"\nbase_url = \"http://h\"\n",
                "unknown field `base_url`",
            ),
            (
                "kind = \"openai\"\nbase_url = \"http://h\"\nanthropic_version = \"x\"\n",
                "`anthropic_version` is only for kind = \"anthropic\"",
            ),
            (
                "kind = \"anthropic\"\nbase_url = \"http://h\"\nlatency = \"1s\"\n",
                "unknown field `latency`",
            ),
            (
                "kind = \"openai\"\nbase_url = \"http://h\"\nwrkspace = 1\n",
                "unknown field `wrkspace`",
            ),
            ("kind = \"openai\"\n", "missing field `base_url`"),
            (
                "kind = \"emulator\"\nrequests_per_minute = 0\n",
                "expected a nonzero u32",
            ),
            ("kind = \"gpt\"\n", "unknown variant `gpt`"),
            ("models = [\"*\"]\n", "missing field `kind`"),
            (
                "kind = \"anthropic\"\nbase_url = \"http://h\"\ntimeout = \"soon\"\n",
                "\"soon\"",
            ),
            ("kind = \"emulator\"\nmax_backoff = \"8\"\n", "\"8\""),
        ] {
            let error = entry(&format!("[[backends]]\nname = \"x\"\n{text}")).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
