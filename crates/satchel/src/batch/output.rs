//! Printing: a plain aligned table for people, pretty JSON (the API's own shapes) for
//! scripts.

use std::io::Write;

use indicatif::{ProgressState, ProgressStyle};
use satchel_client::{MessageBatch, RequestCounts};
use serde::Serialize;

use super::Failure;

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::Other(format!("cannot print JSON: {e}")))?;
    print_stdout(&format!("{text}\n"))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
pub fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Other(format!("cannot write to stdout: {e}"))),
    }
}

/// `100 requests: 97 succeeded, 2 errored, 1 canceled, 0 expired, 0 processing`.
pub fn counts_line(counts: &RequestCounts) -> String {
    format!(
        "{} requests: {} succeeded, {} errored, {} canceled, {} expired, {} processing",
        counts.total(),
        counts.succeeded,
        counts.errored,
        counts.canceled,
        counts.expired,
        counts.processing
    )
}

/// One batch: as JSON, or as a two-column table.
pub fn batch(batch: &MessageBatch, as_json: bool) -> Result<(), Failure> {
    if as_json {
        return json(batch);
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows = vec![
        vec!["id".into(), batch.id.clone()],
        vec!["status".into(), batch.processing_status.as_str().into()],
        vec!["requests".into(), counts_line(&batch.request_counts)],
        vec!["created_at".into(), batch.created_at.to_string()],
        vec!["expires_at".into(), batch.expires_at.to_string()],
        vec![
            "ended_at".into(),
            or_dash(batch.ended_at.map(|t| t.to_string())),
        ],
        vec![
            "cancel_initiated_at".into(),
            or_dash(batch.cancel_initiated_at.map(|t| t.to_string())),
        ],
        vec![
            "archived_at".into(),
            or_dash(batch.archived_at.map(|t| t.to_string())),
        ],
        vec!["results_url".into(), or_dash(batch.results_url.clone())],
    ];
    print_stdout(&table(&[], &rows, &[]))
}

/// Batches: as a JSON array, or a table with one row each.
pub fn batches(batches: &[MessageBatch], as_json: bool) -> Result<(), Failure> {
    if as_json {
        return json(&batches);
    }
    if batches.is_empty() {
        return print_stdout("no batches\n");
    }
    let headers = [
        "ID",
        "STATUS",
        "TOTAL",
        "PROCESSING",
        "SUCCEEDED",
        "ERRORED",
        "CANCELED",
        "EXPIRED",
        "CREATED",
    ];
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            let c = &b.request_counts;
            vec![
                b.id.clone(),
                b.processing_status.as_str().into(),
                c.total().to_string(),
                c.processing.to_string(),
                c.succeeded.to_string(),
                c.errored.to_string(),
                c.canceled.to_string(),
                c.expired.to_string(),
                b.created_at.to_string(),
            ]
        })
        .collect();
    print_stdout(&table(&headers, &rows, &[2, 3, 4, 5, 6, 7]))
}

/// A progress bar style from `template`, which may use `{rate}`: items per second with one
/// decimal (indicatif's own `{per_sec}` prints four).
pub fn bar_style(template: &str) -> ProgressStyle {
    // The templates are constants; if indicatif ever rejected one, a plain bar still works.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let rate = state.per_sec();
                let _ = if rate >= 100.0 {
                    write!(w, "{rate:.0}/s")
                } else {
                    write!(w, "{rate:.1}/s")
                };
            },
        )
        .progress_chars("=> ")
}

/// Columns padded to their widest cell, two spaces apart; `numeric` columns right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>], numeric: &[usize]) -> String {
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([headers.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0; columns];
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let all = (!headers.is_empty())
        .then_some(&header_row)
        .into_iter()
        .chain(rows);
    for row in all.clone() {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            let pad = widths[i].saturating_sub(cell.chars().count());
            if numeric.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if !last {
                    line.push_str(&" ".repeat(pad));
                }
            }
            if !last {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_and_right_align_numbers() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned(), "x".to_owned()],
            vec!["long-id".to_owned(), "100".to_owned(), "y".to_owned()],
        ];
        assert_eq!(
            super::table(&["ID", "N", "NOTE"], &rows, &[1]),
            "ID         N  NOTE\na          1  x\nlong-id  100  y\n"
        );
        assert_eq!(
            super::table(&[], &[vec!["k".into(), "v".into()]], &[]),
            "k  v\n"
        );
    }
}
