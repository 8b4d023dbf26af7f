//! A value that validates against a JSON Schema, made up deterministically: what the emulator
//! puts in a forced tool call's `input` and in a structured output.
//!
//! It covers what tool and output schemas use in practice: `type` (one or a list), `enum`,
//! `const`, `properties` and `required`, `items` / `prefixItems` with `minItems`, `minimum` /
//! `maximum` (and exclusive bounds, `multipleOf` for integers), `minLength` / `maxLength`,
//! common `format`s, `anyOf` / `oneOf` / `allOf` (the first branch), `$ref` into `$defs` or
//! `definitions`. Every property is filled in, required or not, so the value shows the whole
//! shape a caller's code reads.

use serde_json::{Map, Value, json};

/// How deep nested schemas are followed (a recursive `$ref` stops here with `null` / `{}`).
const MAX_DEPTH: usize = 16;

/// A value valid against `schema`; `hint` seeds the strings (e.g. the user's words).
pub fn example(schema: &Value, hint: &str) -> Value {
    Maker { root: schema, hint }.make(schema, "value", 0)
}

struct Maker<'a> {
    root: &'a Value,
    hint: &'a str,
}

impl Maker<'_> {
    fn make(&self, schema: &Value, name: &str, depth: usize) -> Value {
        let Some(s) = schema.as_object() else {
            // `true` or a missing schema: anything goes.
            return Value::String(self.text(name, 1, None));
        };
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        if let Some(target) = s.get("$ref").and_then(Value::as_str) {
            return match self.resolve(target) {
                Some(resolved) => self.make(resolved, name, depth + 1),
                None => Value::Null,
            };
        }
        if let Some(value) = s.get("const") {
            return value.clone();
        }
        if let Some(first) = s
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        for combinator in ["anyOf", "oneOf"] {
            if let Some(first) = s
                .get(combinator)
                .and_then(Value::as_array)
                .and_then(|branches| {
                    branches
                        .iter()
                        .find(|b| !is_null_schema(b))
                        .or(branches.first())
                })
            {
                return self.make(first, name, depth + 1);
            }
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            return self.make(&merge(all), name, depth + 1);
        }
        match type_of(s) {
            "object" => self.object(s, depth),
            "array" => self.array(s, name, depth),
            "string" => Value::String(self.string(s, name)),
            "integer" => json!(integer(s)),
            "number" => number(s),
            "boolean" => Value::Bool(true),
            "null" => Value::Null,
            _ => Value::String(self.text(name, 1, None)),
        }
    }

    fn object(&self, s: &Map<String, Value>, depth: usize) -> Value {
        let mut out = Map::new();
        if let Some(properties) = s.get("properties").and_then(Value::as_object) {
            for (key, property) in properties {
                out.insert(key.clone(), self.make(property, key, depth + 1));
            }
        }
        // Required keys with no schema of their own (allowed by `additionalProperties`).
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !out.contains_key(key) {
                    let extra = s.get("additionalProperties").unwrap_or(&Value::Bool(true));
                    out.insert(key.to_owned(), self.make(extra, key, depth + 1));
                }
            }
        }
        Value::Object(out)
    }

    fn array(&self, s: &Map<String, Value>, name: &str, depth: usize) -> Value {
        let mut out: Vec<Value> = s
            .get("prefixItems")
            .and_then(Value::as_array)
            .map(|prefix| {
                prefix
                    .iter()
                    .map(|p| self.make(p, name, depth + 1))
                    .collect()
            })
            .unwrap_or_default();
        let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(1) as usize;
        let max = s
            .get("maxItems")
            .and_then(Value::as_u64)
            .map(|m| m as usize);
        let want = min
            .max(out.len())
            .max(1)
            .min(max.unwrap_or(usize::MAX))
            .min(64);
        let items = s.get("items").unwrap_or(&Value::Bool(true));
        while out.len() < want {
            let mut item = self.make(items, name, depth + 1);
            // `uniqueItems`: vary strings and numbers by position.
            if s.get("uniqueItems") == Some(&Value::Bool(true)) {
                item = vary(item, out.len());
            }
            out.push(item);
        }
        Value::Array(out)
    }

    fn string(&self, s: &Map<String, Value>, name: &str) -> String {
        let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
        let max = s
            .get("maxLength")
            .and_then(Value::as_u64)
            .map(|m| m as usize);
        let formatted = match s.get("format").and_then(Value::as_str) {
            Some("date-time") => Some("2025-01-01T00:00:00Z"),
            Some("date") => Some("2025-01-01"),
            Some("time") => Some("00:00:00Z"),
            Some("email") => Some("user@example.com"),
            Some("uri" | "url" | "iri") => Some("https://example.com/"),
            Some("uuid") => Some("00000000-0000-4000-8000-000000000000"),
            Some("hostname") => Some("example.com"),
            Some("ipv4") => Some("192.0.2.1"),
            Some("ipv6") => Some("2001:db8::1"),
            _ => None,
        };
        match formatted {
            Some(text) => text.to_owned(),
            None => self.text(name, min, max),
        }
    }

    /// Words from the hint (or the field's name), padded or cut to the bounds.
    fn text(&self, name: &str, min: usize, max: Option<usize>) -> String {
        let base = if self.hint.trim().is_empty() {
            name
        } else {
            self.hint.trim()
        };
        let mut text: String = base.chars().take(max.unwrap_or(64).min(64)).collect();
        while text.chars().count() < min {
            text.push('x');
        }
        text
    }

    fn resolve(&self, target: &str) -> Option<&Value> {
        let path = target.strip_prefix('#')?;
        if path.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(path)
    }
}

fn type_of(s: &Map<String, Value>) -> &str {
    match s.get("type") {
        Some(Value::String(t)) => t,
        // A list of types: the first that is not `null`.
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or_else(|| types.first().and_then(Value::as_str))
            .unwrap_or("string"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") || s.contains_key("prefixItems") => "array",
        _ => "",
    }
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// The branches of an `allOf` as one schema (their keys together; properties merged).
fn merge(all: &[Value]) -> Value {
    let mut out = Map::new();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for branch in all.iter().filter_map(Value::as_object) {
        for (key, value) in branch {
            match key.as_str() {
                "properties" => {
                    if let Some(p) = value.as_object() {
                        properties.extend(p.clone());
                    }
                }
                "required" => {
                    if let Some(r) = value.as_array() {
                        required.extend(r.iter().cloned());
                    }
                }
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
    }
    if !properties.is_empty() {
        out.insert("properties".into(), Value::Object(properties));
        out.entry("type").or_insert_with(|| json!("object"));
    }
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    Value::Object(out)
}

fn integer(s: &Map<String, Value>) -> i64 {
    let mut low = s
        .get("minimum")
        .and_then(Value::as_f64)
        .map(|m| m.ceil() as i64);
    if let Some(e) = s.get("exclusiveMinimum").and_then(Value::as_f64) {
        low = Some(low.unwrap_or(i64::MIN).max(e.floor() as i64 + 1));
    }
    let mut high = s
        .get("maximum")
        .and_then(Value::as_f64)
        .map(|m| m.floor() as i64);
    if let Some(e) = s.get("exclusiveMaximum").and_then(Value::as_f64) {
        high = Some(high.unwrap_or(i64::MAX).min(e.ceil() as i64 - 1));
    }
    let mut value = low.unwrap_or(0).max(if high.is_some_and(|h| h < 0) {
        i64::MIN
    } else {
        0
    });
    if let Some(h) = high {
        value = value.min(h);
    }
    if let Some(step) = s
        .get("multipleOf")
        .and_then(Value::as_i64)
        .filter(|&m| m > 0)
        && value % step != 0
    {
        value += step - value.rem_euclid(step);
    }
    value
}

fn number(s: &Map<String, Value>) -> Value {
    if s.get("multipleOf").and_then(Value::as_i64).is_some() {
        return json!(integer(s));
    }
    let low = s.get("minimum").and_then(Value::as_f64);
    let high = s.get("maximum").and_then(Value::as_f64);
    let ex_low = s.get("exclusiveMinimum").and_then(Value::as_f64);
    let ex_high = s.get("exclusiveMaximum").and_then(Value::as_f64);
    let value = match (low.or(ex_low), high.or(ex_high)) {
        (Some(l), Some(h)) => (l + h) / 2.0,
        (Some(l), None) => l + if ex_low.is_some() { 1.0 } else { 0.0 },
        (None, Some(h)) => (h - 1.0).min(0.0),
        (None, None) => 0.5,
    };
    json!(value)
}

fn vary(item: Value, index: usize) -> Value {
    match item {
        Value::String(s) => Value::String(format!("{s} {}", index + 1)),
        Value::Number(n) => json!(n.as_f64().unwrap_or(0.0) + index as f64),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_property_with_the_right_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 2},
                "when": {"type": "string", "format": "date-time"},
                "where": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]},
                "maybe": {"type": ["null", "integer"]},
                "code": {"type": "string", "minLength": 5, "maxLength": 6},
            },
            "required": ["city", "unit"]
        });
        let v = example(&schema, "Paris");
        assert_eq!(v["city"], "Paris");
        assert_eq!(v["unit"], "celsius");
        assert_eq!(v["days"], 1);
        let ratio = v["ratio"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio <= 1.0);
        assert_eq!(v["flags"], json!([true, true]));
        assert_eq!(v["when"], "2025-01-01T00:00:00Z");
        assert!(v["where"]["lat"].is_number());
        assert_eq!(v["maybe"], 0);
        let code = v["code"].as_str().unwrap();
        assert!((5..=6).contains(&code.chars().count()), "{code}");
    }

    #[test]
    fn follows_refs_combinators_and_stops_on_recursion() {
        let schema = json!({
            "$defs": {"node": {"type": "object", "properties": {"name": {"type": "string"}, "child": {"$ref": "#/$defs/node"}}}},
            "type": "object",
            "properties": {
                "tree": {"$ref": "#/$defs/node"},
                "either": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]},
                "both": {"allOf": [{"properties": {"a": {"type": "string"}}}, {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]},
                "fixed": {"const": 42},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "minItems": 3},
            }
        });
        let v = example(&schema, "");
        assert!(v["tree"]["child"]["child"].is_object());
        assert_eq!(v["either"], 3);
        assert_eq!(v["both"]["b"], true);
        assert!(v["both"]["a"].is_string());
        assert_eq!(v["fixed"], 42);
        let tags = v["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 3);
        assert_ne!(tags[0], tags[1]);
    }

    #[test]
    fn integers_respect_bounds_and_steps() {
        assert_eq!(integer(json!({"minimum": 3}).as_object().unwrap()), 3);
        assert_eq!(
            integer(json!({"exclusiveMinimum": 3}).as_object().unwrap()),
            4
        );
        assert_eq!(integer(json!({"maximum": -5}).as_object().unwrap()), -5);
        assert_eq!(
            integer(json!({"minimum": 1, "multipleOf": 5}).as_object().unwrap()),
            5
        );
    }
}
