//! Realistic workloads, generated here (deterministically, from a seed) rather than shipped.
//!
//! Each request looks like what people put in batches: a system prompt (one of a few, some
//! long), one to five turns alternating user / assistant and ending on the user, content as a
//! plain string or as text blocks, a spread of `max_tokens`, and now and then `temperature`,
//! `stop_sequences` or `metadata`. Prompt sizes are mixed: most requests are small, a third a
//! few KB, one in ten 5–10 KB; the average request is about 2.5 KB, so 100,000 of them make a
//! create body of about 250 MB, near the API's 256 MB cap.

use std::fmt::Write as _;

/// Words the prompts are made of (prose-like, all ASCII, some needing no escaping and a few
/// with characters JSON must escape, so the parser's slow path is exercised too).
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "summarize",
    "classify",
    "extract",
    "customer",
    "invoice",
    "review",
    "ticket",
    "sentiment",
    "product",
    "quarterly",
    "report",
    "translate",
    "paragraph",
    "\\\"quoted\\\"",
    "line\\nbreak",
];

const SYSTEM_PROMPTS: &[&str] = &[
    "You are a helpful assistant. Answer concisely.",
    "You are a support agent for an online shop. Classify the customer's message into one of: billing, shipping, returns, product question, complaint, other. Answer with the category only, then one sentence explaining why. Never invent order numbers. If the message is not in English, answer in the language of the message.",
    "You are an analyst. Read the document and extract, as JSON, the fields: title, author, date, a list of key points (at most five, each under twenty words), the overall sentiment (positive, neutral or negative) and a confidence between 0 and 1. Do not add fields. If a field cannot be found, use null. Quote numbers exactly as written. Keep the order of the key points as they appear in the document. The document follows in the user turn; earlier turns are prior exchanges with the same user and may be ignored unless they change the instructions.",
];

const MODELS: &[&str] = &["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"];

/// The generator: same seed, same bytes.
pub struct Generator {
    rng: fastrand::Rng,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Appends about `size` bytes of prose (JSON-string-escaped already) to `out`.
    fn text(&mut self, out: &mut String, size: usize) {
        let start = out.len();
        while out.len() - start < size {
            if out.len() > start {
                out.push(' ');
            }
            out.push_str(WORDS[self.rng.usize(..WORDS.len())]);
        }
    }

    /// The prompt size of the next request: mixed, about 1.9 KB on average.
    fn prompt_size(&mut self) -> usize {
        match self.rng.u32(0..100) {
            0..=54 => self.rng.usize(200..800),
            55..=89 => self.rng.usize(1_200..4_000),
            _ => self.rng.usize(5_000..10_000),
        }
    }

    /// One request's `params` object, appended to `out`.
    pub fn params(&mut self, out: &mut String) {
        let model = MODELS[self.rng.usize(..MODELS.len())];
        let max_tokens = [64, 256, 1024, 4096][self.rng.usize(..4)];
        let _ = write!(out, r#"{{"model":"{model}","max_tokens":{max_tokens},"#);
        let system = SYSTEM_PROMPTS[self.rng.usize(..SYSTEM_PROMPTS.len())];
        let _ = write!(out, r#""system":"{system}","#);
        if self.rng.u32(0..4) == 0 {
            out.push_str(r#""temperature":0.7,"#);
        }
        if self.rng.u32(0..8) == 0 {
            out.push_str(r#""stop_sequences":["\n\nEND"],"#);
        }
        if self.rng.u32(0..8) == 0 {
            let _ = write!(
                out,
                r#""metadata":{{"user_id":"user-{}"}},"#,
                self.rng.u32(..100_000)
            );
        }
        let turns = [1, 1, 3, 3, 5][self.rng.usize(..5)];
        let total = self.prompt_size();
        // The last user turn carries most of the text (the document); earlier turns are short.
        let earlier = if turns > 1 {
            total / 4 / (turns - 1)
        } else {
            0
        };
        out.push_str(r#""messages":["#);
        for turn in 0..turns {
            if turn > 0 {
                out.push(',');
            }
            let role = if turn % 2 == 0 { "user" } else { "assistant" };
            let size = if turn + 1 == turns {
                total - earlier * (turns - 1)
            } else {
                earlier
            };
            let _ = write!(out, r#"{{"role":"{role}","content":"#);
            if self.rng.bool() {
                out.push('"');
                self.text(out, size);
                out.push('"');
            } else {
                out.push_str(r#"[{"type":"text","text":""#);
                self.text(out, size);
                out.push_str(r#""}]"#);
            }
            out.push('}');
        }
        out.push_str("]}");
    }
}

/// The `custom_id` of the `i`-th request.
pub fn custom_id(i: usize) -> String {
    format!("req-{i:07}")
}

/// A whole create body of `n` requests.
pub fn create_body(n: usize, seed: u64) -> Vec<u8> {
    let mut generator = Generator::new(seed);
    let mut body = String::with_capacity(n * 2_700 + 64);
    body.push_str(r#"{"requests":["#);
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(body, r#"{{"custom_id":"{}","params":"#, custom_id(i));
        generator.params(&mut body);
        body.push('}');
    }
    body.push_str("]}");
    body.into_bytes()
}

/// `n` requests as JSONL (`{"custom_id":…,"params":…}` a line): the same requests as
/// [`create_body`] with the same seed, for the clients that send them one by one.
pub fn requests_jsonl(n: usize, seed: u64) -> Vec<u8> {
    let mut generator = Generator::new(seed);
    let mut out = String::with_capacity(n * 2_700);
    for i in 0..n {
        let _ = write!(out, r#"{{"custom_id":"{}","params":"#, custom_id(i));
        generator.params(&mut out);
        out.push_str("}\n");
    }
    out.into_bytes()
}

/// One request's params of about the workload's average size, for load generators that send
/// a single body over and over.
pub fn typical_params(seed: u64) -> String {
    let mut generator = Generator::new(seed);
    let samples: Vec<String> = (0..2_000)
        .map(|_| {
            let mut s = String::new();
            generator.params(&mut s);
            s
        })
        .collect();
    let mean = samples.iter().map(String::len).sum::<usize>() / samples.len().max(1);
    samples
        .into_iter()
        .min_by_key(|s| s.len().abs_diff(mean))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_json_deterministic_and_about_2_5_kb_a_request() {
        let body = create_body(2_000, 7);
        assert_eq!(body, create_body(2_000, 7));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let requests = value["requests"].as_array().unwrap();
        assert_eq!(requests.len(), 2_000);
        assert_eq!(requests[3]["custom_id"], "req-0000003");
        let last = requests[5]["params"]["messages"].as_array().unwrap();
        assert_eq!(last.last().unwrap()["role"], "user");
        let per_request = body.len() / 2_000;
        assert!(
            (2_000..3_200).contains(&per_request),
            "{per_request} bytes a request"
        );
    }

    #[test]
    fn jsonl_holds_the_same_requests() {
        let body: serde_json::Value = serde_json::from_slice(&create_body(50, 3)).unwrap();
        let lines = requests_jsonl(50, 3);
        for (i, line) in lines.split(|&b| b == b'\n').take(50).enumerate() {
            let item: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(item, body["requests"][i]);
        }
        let typical: serde_json::Value = serde_json::from_str(&typical_params(3)).unwrap();
        assert!(typical["messages"].is_array());
    }
}
