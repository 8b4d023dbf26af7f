//! The webhook settings of the config file, checked at start with errors that name the
//! entry and what is wrong:
//!
//! ```toml
//! [[webhooks]]
//! workspace = "team-a"
//! url = "https://hooks.example.com/satchel"
//! secret = "whsec_…"                      # base64 of 24 to 64 bytes, after whsec_
//! events = ["message_batch.ended"]        # the default: every event
//!
//! [webhook_delivery]                      # optional; the defaults shown
//! allow_private_targets = false
//! max_attempts = 12
//! max_age = "24h"
//! initial_backoff = "5s"
//! max_backoff = "1h"
//! timeout = "15s"
//! organization_id = "org_satchel"
//! ```

use std::time::Duration;

use satchel_core::webhooks::{EVENT_TYPES, Endpoint, SigningKey, WebhookConfig};
use serde::Deserialize;

use crate::config::ConfigError;

/// One `[[webhooks]]` entry: an endpoint of a workspace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    #[serde(default = "default_workspace")]
    pub workspace: String,
    pub url: String,
    /// `whsec_` + base64 of the signing key (as the Anthropic console gives them).
    pub secret: String,
    /// Event types sent to this endpoint; every type when left out.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    /// This endpoint may be private, loopback or link-local (overrides the global setting).
    pub allow_private_targets: Option<bool>,
}

/// `[webhook_delivery]`: how every endpoint is delivered to.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDeliverySection {
    #[serde(default)]
    pub allow_private_targets: bool,
    pub max_attempts: Option<u32>,
    pub max_age: Option<String>,
    pub initial_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub timeout: Option<String>,
    pub organization_id: Option<String>,
}

fn default_workspace() -> String {
    crate::auth::DEFAULT_WORKSPACE.to_owned()
}

fn all_events() -> Vec<String> {
    EVENT_TYPES.iter().map(|e| (*e).to_owned()).collect()
}

fn problem(entry: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Webhook {
        entry: entry.to_owned(),
        problem: problem.into(),
    }
}

fn duration(
    setting: &str,
    text: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(problem(
                "[webhook_delivery]",
                format!("{setting} must be longer than zero"),
            )),
            Err(e) => Err(problem(
                "[webhook_delivery]",
                format!("{setting} = {text:?}: {e}"),
            )),
        },
    }
}

/// The checked webhook configuration.
pub fn build(
    entries: &[WebhookEntry],
    delivery: &WebhookDeliverySection,
) -> Result<WebhookConfig, ConfigError> {
    let defaults = WebhookConfig::default();
    let max_attempts = delivery.max_attempts.unwrap_or(defaults.max_attempts);
    if max_attempts == 0 {
        return Err(problem(
            "[webhook_delivery]",
            "max_attempts must be at least 1",
        ));
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let name = format!("[[webhooks]] #{} ({})", i + 1, entry.workspace);
        let endpoint = endpoint(&name, entry, delivery.allow_private_targets)?;
        if endpoints
            .iter()
            .any(|e| e.workspace == endpoint.workspace && e.url == endpoint.url)
        {
            return Err(problem(&name, "the same url twice for one workspace"));
        }
        endpoints.push(endpoint);
    }
    let config = WebhookConfig {
        endpoints,
        organization_id: delivery
            .organization_id
            .clone()
            .unwrap_or(defaults.organization_id),
        max_attempts,
        max_age: duration("max_age", delivery.max_age.as_ref(), defaults.max_age)?,
        initial_backoff: duration(
            "initial_backoff",
            delivery.initial_backoff.as_ref(),
            defaults.initial_backoff,
        )?,
        max_backoff: duration(
            "max_backoff",
            delivery.max_backoff.as_ref(),
            defaults.max_backoff,
        )?,
        timeout: duration("timeout", delivery.timeout.as_ref(), defaults.timeout)?,
        ..defaults
    };
    Ok(config)
}

fn endpoint(name: &str, entry: &WebhookEntry, allow_all: bool) -> Result<Endpoint, ConfigError> {
    if entry.workspace.trim().is_empty() {
        return Err(problem(name, "workspace is empty"));
    }
    let url = checked_url(name, &entry.url)?;
    let allow_private_targets = entry.allow_private_targets.unwrap_or(allow_all);
    if !allow_private_targets
        && let Some(ip) = literal_ip(&url)
        && !satchel_upstream::webhook::is_public(ip)
    {
        return Err(problem(
            name,
            format!(
                "url {:?} is a private, loopback or link-local address; set allow_private_targets = true \
                 (on the entry or in [webhook_delivery]) to allow it",
                entry.url
            ),
        ));
    }
    let key = SigningKey::from_secret(entry.secret.trim())
        .map_err(|e| problem(name, format!("secret: {e}")))?;
    if entry.events.is_empty() {
        return Err(problem(name, "events is empty"));
    }
    if let Some(unknown) = entry
        .events
        .iter()
        .find(|e| !EVENT_TYPES.contains(&e.as_str()))
    {
        return Err(problem(
            name,
            format!(
                "unknown event {unknown:?}; known: {}",
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    Ok(Endpoint {
        workspace: entry.workspace.clone(),
        url: entry.url.clone(),
        key,
        events: entry.events.clone(),
        allow_private_targets,
    })
}

/// The URL, parsed and checked: http or https, a host, no credentials in it.
fn checked_url(name: &str, text: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text).map_err(|e| problem(name, format!("url {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(problem(name, "url must be http:// or https://"));
    }
    if url.host().is_none() {
        return Err(problem(name, "url has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(problem(
            name,
            "url must not hold credentials (user:password@)",
        ));
    }
    Ok(url)
}

fn literal_ip(url: &url::Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn entry(url: &str) -> WebhookEntry {
        WebhookEntry {
            workspace: "w".into(),
            url: url.into(),
            secret: SECRET.into(),
            events: all_events(),
            allow_private_targets: None,
        }
    }

    fn error(entries: &[WebhookEntry], delivery: &WebhookDeliverySection) -> String {
        build(entries, delivery).unwrap_err().to_string()
    }

    #[test]
    fn entries_are_checked_with_clear_errors() {
        let d = WebhookDeliverySection::default();
        assert!(error(&[entry("ftp://x.example/")], &d).contains("http:// or https://"));
        assert!(error(&[entry("https://u:p@x.example/")], &d).contains("credentials"));
        assert!(error(&[entry("http://127.0.0.1:9/")], &d).contains("allow_private_targets"));
        assert!(error(&[entry("http://[fe80::1]/")], &d).contains("link-local"));
        let mut bad = entry("https://x.example/");
        bad.secret = "nope".into();
        assert!(error(&[bad], &d).contains("whsec_"));
        let mut bad = entry("https://x.example/");
        bad.events = vec!["message_batch.exploded".into()];
        assert!(error(&[bad], &d).contains("unknown event"));
        let twice = [entry("https://x.example/"), entry("https://x.example/")];
        assert!(error(&twice, &d).contains("twice"));
        let d = WebhookDeliverySection {
            timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(error(&[], &d).contains("timeout"));
    }

    #[test]
    fn private_targets_may_be_allowed_globally_or_per_entry() {
        let global = WebhookDeliverySection {
            allow_private_targets: true,
            ..Default::default()
        };
        let config = build(&[entry("http://127.0.0.1:9/")], &global).unwrap();
        assert!(config.endpoints[0].allow_private_targets);
        let mut own = entry("http://127.0.0.1:9/");
        own.allow_private_targets = Some(true);
        let config = build(&[own, entry("https://x.example/")], &Default::default()).unwrap();
        assert!(config.endpoints[0].allow_private_targets);
        assert!(!config.endpoints[1].allow_private_targets);
        assert_eq!(config.max_attempts, WebhookConfig::default().max_attempts);
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_example_config_has_a_valid_webhook() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../satchel.example.toml");
        let config = crate::ConfigFile::load(&path)
            .unwrap()
            .webhook_config()
            .unwrap();
        assert_eq!(config.endpoints.len(), 1);
        assert_eq!(config.endpoints[0].workspace, "team-a");
        assert_eq!(config.max_attempts, 12);
    }
}
