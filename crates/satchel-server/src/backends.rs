//! The routing table from the configuration: each `[[backends]]` entry becomes a backend
//! with its limits and retry policy; with none, the emulator serves every model.

use std::sync::Arc;
use std::time::Duration;

use satchel_core::Backend;
use satchel_core::emulator::{Emulator, EmulatorConfig};
use satchel_core::limits::{LimitsConfig, RetryPolicy};
use satchel_core::routing::{Route, Routes};
use satchel_upstream::{AnthropicBackend, HttpOptions, OpenAiBackend};

use crate::config::{BackendKind, ConfigError, HttpEntry, ServerConfig};

/// The routes, and how many requests the dispatcher may lease at once: twice the routes'
/// total concurrency (room for requests waiting out a retry backoff beside those running),
/// capped by `--max-in-flight`. Leasing no more than that keeps requests waiting in the
/// store, where claims are fair across batches and workspaces, rather than inside a route.
pub fn build(config: &ServerConfig) -> Result<(Routes, usize), ConfigError> {
    if config.backends.is_empty() {
        let limits = LimitsConfig {
            max_concurrency: config.dispatch.max_in_flight,
            ..LimitsConfig::default()
        };
        let emulator =
            Emulator::open(config.emulator.clone()).map_err(|e| ConfigError::Backend {
                backend: "emulator".into(),
                problem: e.to_string(),
            })?;
        let route = Route::new("emulator", Arc::new(emulator), &limits, emulator_retry());
        return Ok((Routes::single(route), config.dispatch.max_in_flight));
    }
    let mut routes = Routes::new();
    let mut total = 0usize;
    let mut names = std::collections::HashSet::new();
    for entry in &config.backends {
        let problem = |problem: String| ConfigError::Backend {
            backend: entry.name.clone(),
            problem,
        };
        if !names.insert(entry.name.clone()) {
            return Err(problem("the name is used twice".into()));
        }
        if entry.models.is_empty() {
            return Err(problem("`models` is empty: it would serve nothing".into()));
        }
        if entry.max_concurrency == 0 {
            return Err(problem("`max_concurrency` must be at least 1".into()));
        }
        let backend = build_backend(&entry.kind, config).map_err(problem)?;
        let limits = LimitsConfig {
            max_concurrency: entry.max_concurrency,
            requests_per_minute: entry.requests_per_minute,
            tokens_per_minute: entry.tokens_per_minute,
        };
        let retry = RetryPolicy {
            max_retries: entry.max_retries,
            initial_backoff: entry.initial_backoff,
            max_backoff: entry.max_backoff,
            ..RetryPolicy::default()
        };
        total += 2 * entry.max_concurrency;
        routes.add(
            &entry.models,
            Route::new(entry.name.clone(), backend, &limits, retry),
        );
    }
    Ok((routes, total.min(config.dispatch.max_in_flight.max(1))))
}

/// The retries of the default emulator route. Only fixtures' retryable errors use them (the
/// emulator's own failures are final), so: as many as a backend's by default, with backoffs
/// short enough for test suites.
fn emulator_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        ..RetryPolicy::default()
    }
}

/// The backend one entry's kind describes, or what is wrong with its settings.
fn build_backend(kind: &BackendKind, config: &ServerConfig) -> Result<Arc<dyn Backend>, String> {
    match kind {
        BackendKind::Emulator(emulator) => {
            if !(0.0..=1.0).contains(&emulator.error_rate) {
                return Err(format!(
                    "`error_rate` {} must be between 0 and 1",
                    emulator.error_rate
                ));
            }
            let emulator = Emulator::open(EmulatorConfig {
                latency: emulator.latency,
                error_rate: emulator.error_rate,
                // Its own file, else the one of --emulator-fixtures.
                fixtures: emulator
                    .fixtures
                    .clone()
                    .or_else(|| config.emulator.fixtures.clone()),
            })
            .map_err(|e| e.to_string())?;
            Ok(Arc::new(emulator))
        }
        BackendKind::Anthropic(anthropic) => {
            if let Some(version) = &anthropic.anthropic_version
                && axum::http::HeaderValue::from_str(version).is_err()
            {
                return Err(format!(
                    "`anthropic_version` {version:?} is not a valid header value"
                ));
            }
            let (base_url, api_key, options) = http_settings(anthropic)?;
            let backend =
                AnthropicBackend::new(&base_url, api_key, options).map_err(|e| e.to_string())?;
            Ok(Arc::new(
                backend.pin_version(anthropic.anthropic_version.clone()),
            ))
        }
        BackendKind::Openai(http) => {
            let (base_url, api_key, options) = http_settings(http)?;
            let backend =
                OpenAiBackend::new(&base_url, api_key, options).map_err(|e| e.to_string())?;
            Ok(Arc::new(backend))
        }
    }
}

/// An HTTP backend's URL (checked), its key (read from the variable named) and its timeouts.
fn http_settings<Pin>(
    http: &HttpEntry<Pin>,
) -> Result<(String, Option<String>, HttpOptions), String> {
    let base_url = &http.base_url;
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(format!(
            "`base_url` {base_url:?} must start with http:// or https://"
        ));
    }
    let api_key = match &http.api_key_env {
        Some(var) => Some(
            std::env::var(var)
                .map_err(|_| format!("the environment variable {var} (api_key_env) is not set"))?,
        ),
        None => None,
    };
    let options = HttpOptions {
        timeout: http.timeout,
        connect_timeout: http.connect_timeout,
    };
    Ok((base_url.clone(), api_key, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backends: &str) -> ServerConfig {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), "x.db".into());
        config.backends = toml::from_str::<crate::ConfigFile>(backends)
            .unwrap()
            .backends;
        config
    }

    fn problem(backends: &str) -> String {
        match build(&config(backends)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected a configuration error"),
        }
    }

    #[test]
    fn without_backends_the_emulator_serves_everything() {
        let (routes, capacity) = build(&config("")).unwrap();
        assert_eq!(
            routes.routes().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["emulator"]
        );
        assert_eq!(capacity, 512);
    }

    #[test]
    fn capacity_is_the_routes_total_capped_by_max_in_flight() {
        let two = "[[backends]]\nname = \"a\"\nkind = \"emulator\"\nmax_concurrency = 8\n\
                   [[backends]]\nname = \"b\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:1\"\nmax_concurrency = 4\n";
        assert_eq!(build(&config(two)).unwrap().1, 24);
        let big = "[[backends]]\nname = \"a\"\nkind = \"emulator\"\nmax_concurrency = 5000\n";
        assert_eq!(build(&config(big)).unwrap().1, 512);
    }

    #[test]
    fn configuration_mistakes_are_named() {
        assert_eq!(
            problem(
                "[[backends]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"http://h\"\napi_key_env = \"SATCHEL_TEST_SURELY_UNSET\"\n"
            ),
            "backend \"x\": the environment variable SATCHEL_TEST_SURELY_UNSET (api_key_env) is not set"
        );
        assert_eq!(
            problem(
                "[[backends]]\nname = \"x\"\nkind = \"emulator\"\n[[backends]]\nname = \"x\"\nkind = \"emulator\"\n"
            ),
            "backend \"x\": the name is used twice"
        );
        assert_eq!(
            problem("[[backends]]\nname = \"x\"\nkind = \"emulator\"\nerror_rate = 1.5\n"),
            "backend \"x\": `error_rate` 1.5 must be between 0 and 1"
        );
        assert!(
            problem(
                "[[backends]]\nname = \"x\"\nkind = \"anthropic\"\nbase_url = \"http://h\"\nanthropic_version = \"a\\nb\"\n"
            )
            .contains("not a valid header value")
        );
        assert!(
            problem("[[backends]]\nname = \"x\"\nkind = \"anthropic\"\nbase_url = \"ftp://h\"\n")
                .contains("must start with http")
        );
    }
}
