//! `satchel batch create FILE`: read a JSONL requests file, check it as the API would at
//! create time, and send it only if every line is right.
//!
//! Checked here, with line numbers: each line is a JSON object with exactly `custom_id` and
//! `params`; `custom_id` matches `^[a-zA-Z0-9_-]{1,64}$` and is unique; `params` is an object;
//! 1 to 100,000 requests; a body of at most 256 MiB. (The contents of `params` are checked by
//! the API when each request runs, as for any batch.) The body is built while reading, so
//! the file is held once, as the bytes to send.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use clap::Args;
use satchel_client::{CreateBody, MessageBatchRequest};
use satchel_wire::{MAX_CREATE_BODY_BYTES, MAX_REQUESTS_PER_BATCH, is_valid_custom_id};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Ctx, Failure, output, wait};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// JSONL file of requests, one {"custom_id": "...", "params": {...}} a line; `-` reads
    /// stdin. Blank lines are ignored.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Follow the new batch until it ends (as `satchel batch wait`), then print it.
    #[arg(long)]
    wait: bool,

    #[command(flatten)]
    follow: wait::FollowArgs,
}

pub async fn run(ctx: &Ctx, args: CreateArgs) -> Result<(), Failure> {
    let name = args.file.display().to_string();
    let reader: Box<dyn Read> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .map_err(|e| Failure::Usage(format!("cannot read {name}: {e}")))?,
        )
    };
    let label = if name == "-" { "stdin" } else { &name };
    let body = read_requests(BufReader::with_capacity(1 << 20, reader), label)?;
    let client = ctx.client()?;
    let count = body.len();
    let batch = client.messages().batches().create_body(body).await?;
    if !args.wait {
        return output::batch(&batch, ctx.json());
    }
    eprintln!("created {} ({count} requests)", batch.id);
    wait::follow_and_report(ctx, &client, &batch.id, &args.follow).await
}

/// A line as written: only these two keys; types checked after, for clearer messages.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object {\"custom_id\", \"params\"}"
)]
struct Line {
    custom_id: Option<serde_json::Value>,
    params: Option<Box<RawValue>>,
}

/// Problems shown before giving up; the rest are counted.
const MAX_SHOWN: usize = 20;

/// Reads and checks every line; the finished body, or every problem found (up to
/// [`MAX_SHOWN`]) as one usage failure.
fn read_requests(mut reader: impl BufRead, label: &str) -> Result<CreateBody, Failure> {
    let mut body = CreateBody::new();
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut problem_count = 0usize;
    let mut requests = 0usize;
    let mut too_big = false;
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Failure::Usage(format!("cannot read {label}: {e}")))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let mut text: &[u8] = &buf;
        if line_no == 1 {
            // Editors on some systems start files with a byte-order mark.
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut problem = |message: String| {
            problem_count += 1;
            if problems.len() < MAX_SHOWN {
                problems.push(format!("{label}:{line_no}: {message}"));
            }
        };
        // serde would also take a struct from an array (`["id", {}]`): only objects here.
        if text.trim_ascii_start().first() != Some(&b'{') {
            problem(
                match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
                    Ok(_) => "each line must be a JSON object {\"custom_id\", \"params\"}".into(),
                    Err(e) => json_problem(&e),
                },
            );
            continue;
        }
        let line: Line = match serde_json::from_slice(text) {
            Ok(line) => line,
            Err(e) => {
                problem(json_problem(&e));
                continue;
            }
        };
        requests += 1;
        let custom_id = match line.custom_id {
            None => {
                problem("missing \"custom_id\"".into());
                None
            }
            Some(serde_json::Value::String(id)) => {
                if !is_valid_custom_id(&id) {
                    problem(format!(
                        "custom_id {id:?} must be 1 to 64 characters from a-z, A-Z, 0-9, _ and -"
                    ));
                    None
                } else if let Some(first) = first_seen.get(&id) {
                    problem(format!(
                        "duplicate custom_id {id:?} (first on line {first}); custom_ids must be \
                         unique within a batch"
                    ));
                    None
                } else {
                    first_seen.insert(id.clone(), line_no);
                    Some(id)
                }
            }
            Some(other) => {
                problem(format!("\"custom_id\" must be a string, not {other}"));
                None
            }
        };
        let params = match line.params {
            None => {
                problem("missing \"params\"".into());
                None
            }
            Some(params) if params.get().starts_with('{') => Some(params),
            Some(_) => {
                problem("\"params\" must be a JSON object (the Messages API request)".into());
                None
            }
        };
        // Past a limit, keep checking lines but stop growing the body.
        if let (Some(custom_id), Some(params)) = (custom_id, params)
            && problem_count == 0
            && requests <= MAX_REQUESTS_PER_BATCH
            && !too_big
        {
            body.push(&MessageBatchRequest { custom_id, params })
                .map_err(|e| Failure::Usage(format!("{label}:{line_no}: {e}")))?;
            too_big = body.byte_len() as u64 > MAX_CREATE_BODY_BYTES;
        }
    }
    let empty = requests == 0 && problem_count == 0;
    let mut problem = |message: String| {
        problem_count += 1;
        problems.push(message);
    };
    if empty {
        problem(format!(
            "{label} has no requests; a batch needs at least one"
        ));
    }
    if requests > MAX_REQUESTS_PER_BATCH {
        problem(format!(
            "{label} has {requests} requests; a batch holds at most {MAX_REQUESTS_PER_BATCH}"
        ));
    }
    if too_big {
        problem(format!(
            "{label} makes a request body over {MAX_CREATE_BODY_BYTES} bytes (256 MiB), the \
             most the API accepts; split it into several batches"
        ));
    }
    if problem_count == 0 {
        return Ok(body);
    }
    let mut message = problems.join("\n");
    let hidden = problem_count.saturating_sub(problems.len());
    if hidden > 0 {
        message.push_str(&format!("\n… and {hidden} more"));
    }
    message.push_str(&format!(
        "\n{problem_count} problem{} in {label}; nothing was sent",
        if problem_count == 1 { "" } else { "s" }
    ));
    Err(Failure::Usage(message))
}

/// serde_json's message without its "at line 1 column N" (it is always line 1 here), with
/// the column kept where it helps.
fn json_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m);
    match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("not valid JSON (column {}): {message}", e.column())
        }
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<CreateBody, String> {
        read_requests(text.as_bytes(), "f.jsonl").map_err(|f| f.to_string())
    }

    const OK: &str = r#"{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[]}}"#;

    #[test]
    fn a_good_file_becomes_one_body() {
        let text = format!("\u{feff}{OK}\r\n\n  \n{}\n", OK.replace("\"a\"", "\"b\""));
        let body = check(&text).unwrap();
        assert_eq!(body.len(), 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = [
            OK,
            "{not json",
            r#"{"custom_id":"a","params":{}}"#,
            r#"{"custom_id":"b c","params":{}}"#,
            r#"{"custom_id":7,"params":{}}"#,
            r#"{"params":{}}"#,
            r#"{"custom_id":"d"}"#,
            r#"{"custom_id":"e","params":[1]}"#,
            r#"{"custom_id":"f","params":{},"extra":1}"#,
            r#"[1,2]"#,
            "nope",
        ]
        .join("\n");
        let message = check(&text).unwrap_err();
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(
            lines,
            [
                "f.jsonl:2: not valid JSON (column 2): key must be a string",
                "f.jsonl:3: duplicate custom_id \"a\" (first on line 1); custom_ids must be unique within a batch",
                "f.jsonl:4: custom_id \"b c\" must be 1 to 64 characters from a-z, A-Z, 0-9, _ and -",
                "f.jsonl:5: \"custom_id\" must be a string, not 7",
                "f.jsonl:6: missing \"custom_id\"",
                "f.jsonl:7: missing \"params\"",
                "f.jsonl:8: \"params\" must be a JSON object (the Messages API request)",
                "f.jsonl:9: unknown field `extra`, expected `custom_id` or `params`",
                "f.jsonl:10: each line must be a JSON object {\"custom_id\", \"params\"}",
                "f.jsonl:11: not valid JSON (column 2): expected ident",
                "10 problems in f.jsonl; nothing was sent",
            ]
        );
    }

    #[test]
    fn the_limits_are_checked() {
        assert_eq!(
            check("\n\n").unwrap_err(),
            "f.jsonl has no requests; a batch needs at least one\n1 problem in f.jsonl; nothing was sent"
        );
        let many: String = (0..=MAX_REQUESTS_PER_BATCH)
            .map(|i| format!("{{\"custom_id\":\"r{i}\",\"params\":{{}}}}\n"))
            .collect();
        let message = check(&many).unwrap_err();
        assert!(
            message.starts_with("f.jsonl has 100001 requests; a batch holds at most 100000"),
            "{message}"
        );
        let big = "x".repeat(3 << 20);
        let huge: String = (0..90)
            .map(|i| format!("{{\"custom_id\":\"r{i}\",\"params\":{{\"p\":\"{big}\"}}}}\n"))
            .collect();
        let message = check(&huge).unwrap_err();
        assert!(message.contains("over 268435456 bytes"), "{message}");
    }

    #[test]
    fn at_most_twenty_problems_are_shown() {
        let text = "{\n".repeat(25);
        let message = check(&text).unwrap_err();
        assert_eq!(message.lines().count(), 22, "{message}");
        assert!(message.contains("… and 5 more\n25 problems"), "{message}");
    }
}
