//! Which backend runs a request: routes matched on the request's `model`, each with its own
//! limits and retry policy. The default is one route, the emulator, for every model.

use std::borrow::Cow;
use std::sync::Arc;

use satchel_wire::ErrorType;
use serde::Deserialize;
use serde_json::value::RawValue;
use wildmatch::WildMatch;

use crate::backend::{Backend, Failure};
use crate::limits::{LimitsConfig, RetryPolicy, RouteLimits};
use crate::observe::RouteTally;

/// One backend with its limits and retry policy.
pub struct Route {
    pub name: String,
    pub backend: Arc<dyn Backend>,
    pub limits: RouteLimits,
    pub retry: RetryPolicy,
    /// Attempts, throttles, retries, failures and time spent, since start.
    pub tally: RouteTally,
}

impl Route {
    pub fn new(
        name: impl Into<String>,
        backend: Arc<dyn Backend>,
        limits: &LimitsConfig,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            name: name.into(),
            backend,
            limits: RouteLimits::new(limits),
            retry,
            tally: RouteTally::default(),
        }
    }
}

/// The routing table: the first route with a pattern matching the model wins.
pub struct Routes {
    table: Vec<(Vec<WildMatch>, Arc<Route>)>,
    /// Whether any route limits tokens, so requests need a token estimate.
    estimate_tokens: bool,
}

/// Where a request goes, and its estimated size in tokens (input bytes / 4 + `max_tokens`).
pub struct Routed {
    pub route: Arc<Route>,
    pub estimated_tokens: u32,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    max_tokens: Option<serde_json::Number>,
}

impl Routes {
    pub fn new() -> Self {
        Self {
            table: Vec::new(),
            estimate_tokens: false,
        }
    }

    /// Adds a route for the models matching any of `patterns` (`*` and `?` wildcards).
    pub fn add(&mut self, patterns: &[String], route: Route) {
        self.estimate_tokens |= route.limits_tokens();
        let patterns = patterns.iter().map(|p| WildMatch::new(p)).collect();
        self.table.push((patterns, Arc::new(route)));
    }

    /// Every model to one route.
    pub fn single(route: Route) -> Self {
        let mut routes = Self::new();
        routes.add(&["*".to_owned()], route);
        routes
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.table.iter().map(|(_, route)| route)
    }

    /// The route for a request, or the failure that ends it: a missing `model`, or one that
    /// no backend serves (`not_found_error`, as the API answers an unknown model).
    pub fn route(&self, params: &str) -> Result<Routed, Failure> {
        // With one catch-all route and no token limits there is nothing to read.
        if let [(patterns, route)] = self.table.as_slice()
            && !self.estimate_tokens
            && patterns.iter().any(|p| p.matches(""))
        {
            return Ok(Routed {
                route: route.clone(),
                estimated_tokens: 0,
            });
        }
        let Ok(head) = serde_json::from_str::<Head<'_>>(params) else {
            return Err(Failure::fatal(
                ErrorType::InvalidRequestError,
                "Input should be a valid dictionary",
            ));
        };
        let Some(model) = head.model else {
            return Err(Failure::fatal(
                ErrorType::InvalidRequestError,
                "model: Field required",
            ));
        };
        let Ok(model) = serde_json::from_str::<std::borrow::Cow<'_, str>>(model.get()) else {
            return Err(Failure::fatal(
                ErrorType::InvalidRequestError,
                "model: Input should be a valid string",
            ));
        };
        let Some((_, route)) = self
            .table
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| p.matches(&model)))
        else {
            return Err(Failure::fatal(
                ErrorType::NotFoundError,
                format!("model: {model}"),
            ));
        };
        let max_tokens = head.max_tokens.and_then(|n| n.as_u64()).unwrap_or(0);
        let estimate = (params.len() as u64 / 4).saturating_add(max_tokens);
        Ok(Routed {
            route: route.clone(),
            estimated_tokens: u32::try_from(estimate).unwrap_or(u32::MAX),
        })
    }
}

impl Routes {
    /// The index (in [`Routes::routes`] order) of the route serving `model`, if any.
    pub fn index_of(&self, model: &str) -> Option<usize> {
        self.table
            .iter()
            .position(|(patterns, _)| patterns.iter().any(|p| p.matches(model)))
    }

    /// Whether one route serves every model, so claims need not look at models at all.
    pub fn is_catch_all(&self) -> bool {
        matches!(self.table.as_slice(), [(patterns, _)] if patterns.iter().any(|p| p.matches("")))
    }
}

/// The `model` of a request's params, read without parsing the rest when it comes first (as
/// the SDKs send it): the route key recorded at ingest. None when absent or not a string.
pub fn model_of(params: &[u8]) -> Option<Cow<'_, str>> {
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    // The usual shape is read without a parser (once per request at ingest, where the parse
    // cost a tenth of a create), and borrowed; anything else goes through serde below.
    if let Some(model) = leading_model(params) {
        return Some(Cow::Borrowed(model));
    }
    struct Find<'a>(&'a mut Option<String>);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "model" {
                    *self.0 = map.next_value::<String>().ok();
                    // Found: stop here rather than read the rest (the error is discarded).
                    return Err(de::Error::custom("found"));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(params);
    let _ = (&mut de).deserialize_map(Find(&mut found));
    found.map(Cow::Owned)
}

/// The model of `{"model":"name",…` (the SDKs' shape: `model` first, a name without escapes),
/// or None for any other shape. `params` is valid JSON, so a `"` ends the name.
fn leading_model(params: &[u8]) -> Option<&str> {
    fn skip_space(bytes: &[u8]) -> &[u8] {
        let n = bytes
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        &bytes[n..]
    }
    let rest = skip_space(params.strip_prefix(b"{")?);
    let rest = skip_space(rest.strip_prefix(b"\"model\"")?);
    let rest = skip_space(rest.strip_prefix(b":")?);
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Route {
    fn limits_tokens(&self) -> bool {
        self.limits.limits_tokens()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Emulator;

    fn route(name: &str) -> Route {
        Route::new(
            name,
            Arc::new(Emulator::default()),
            &LimitsConfig::default(),
            RetryPolicy::default(),
        )
    }

    #[test]
    fn model_of_reads_the_top_level_model_wherever_it_is() {
        assert_eq!(
            model_of(&bytes(r#"{"model":"a","messages":[]}"#)).as_deref(),
            Some("a")
        );
        assert_eq!(
            model_of(&bytes(
                r#"{"max_tokens":5,"metadata":{"model":"x"},"model":"b\u0041"}"#
            ))
            .as_deref(),
            Some("bA")
        );
        assert_eq!(
            model_of(&bytes(r#"{ "model" : "c\u0041", "x": 1}"#)).as_deref(),
            Some("cA")
        );
        assert_eq!(
            model_of(&bytes("{\n\t\"model\":\"d\"}")).as_deref(),
            Some("d")
        );
        assert_eq!(
            model_of(&bytes(r#"{"model":"","x":1}"#)).as_deref(),
            Some("")
        );
        assert_eq!(model_of(&bytes(r#"{"messages":[]}"#)), None);
        assert_eq!(model_of(&bytes(r#"{"model":5}"#)), None);
        assert_eq!(model_of(&bytes(r#"[1]"#)), None);
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn bytes(json: &str) -> Vec<u8> {
        raw(json).get().into()
    }

    #[test]
    fn first_matching_pattern_wins_and_unknown_models_are_not_found() {
        let mut routes = Routes::new();
        routes.add(&["claude-*".into()], route("anthropic"));
        routes.add(&["qwen*".into(), "llama-?".into()], route("vllm"));
        let name = |params: &str| {
            routes
                .route(raw(params).get())
                .map(|r| r.route.name.clone())
        };
        assert_eq!(
            name(r#"{"model":"claude-sonnet-4-5","max_tokens":1}"#).unwrap(),
            "anthropic"
        );
        assert_eq!(name(r#"{"model":"qwen2.5-7b"}"#).unwrap(), "vllm");
        assert_eq!(name(r#"{"model":"llama-3"}"#).unwrap(), "vllm");
        let unknown = name(r#"{"model":"gpt-4o"}"#).unwrap_err();
        assert_eq!(
            (unknown.kind, unknown.message.as_str()),
            (ErrorType::NotFoundError, "model: gpt-4o")
        );
        assert!(!unknown.is_retryable());
        assert_eq!(
            name(r#"{"max_tokens":1}"#).unwrap_err().message,
            "model: Field required"
        );
    }

    #[test]
    fn estimates_tokens_from_bytes_and_max_tokens() {
        let mut routes = Routes::new();
        routes.add(&["*".into()], route("a"));
        routes.add(&["x".into()], route("b"));
        let params = raw(r#"{"model":"m","max_tokens":100,"messages":[]}"#);
        let routed = routes.route(params.get()).unwrap();
        assert_eq!(routed.estimated_tokens, params.get().len() as u32 / 4 + 100);
    }
}
