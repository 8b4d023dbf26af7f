//! The table: one row per figure, Satchel's number beside its baseline from the same run, the
//! ratio between them, the target and whether it is met. Plus the small statistics helpers
//! every section uses (median, percentiles) and the formatting of numbers.

use std::fmt::Write as _;
use std::time::Duration;

/// Whether a row meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No target, or nothing measured (e.g. a tool was missing).
    None,
}

impl Verdict {
    pub fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn cell(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**not met**",
            Self::None => "–",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    pub satchel: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn new(section: &'static str, figure: impl Into<String>) -> Self {
        Self {
            section,
            figure: figure.into(),
            satchel: "–".into(),
            baseline: "–".into(),
            ratio: "–".into(),
            target: "–".into(),
            verdict: Verdict::None,
        }
    }

    pub fn satchel(mut self, text: impl Into<String>) -> Self {
        self.satchel = text.into();
        self
    }

    pub fn baseline(mut self, text: impl Into<String>) -> Self {
        self.baseline = text.into();
        self
    }

    pub fn ratio(mut self, text: impl Into<String>) -> Self {
        self.ratio = text.into();
        self
    }

    pub fn target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = text.into();
        self.verdict = Verdict::of(met);
        self
    }

    /// A row for a figure that could not be measured, saying why.
    pub fn unavailable(section: &'static str, figure: impl Into<String>, why: &str) -> Self {
        Self::new(section, figure).satchel(why).baseline(why)
    }
}

/// Renders the rows as one markdown table, grouped by section in the order given.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| section | figure | Satchel | baseline (same run) | ratio | target | met? |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.section,
            escape(&row.figure),
            escape(&row.satchel),
            escape(&row.baseline),
            escape(&row.ratio),
            escape(&row.target),
            row.verdict.cell()
        );
    }
    out
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The `q` quantile (0–1) by the nearest-rank method (0 when empty).
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Seconds, with precision that suits the magnitude.
pub fn fmt_s(seconds: f64) -> String {
    if seconds >= 10.0 {
        format!("{seconds:.1} s")
    } else if seconds >= 0.1 {
        format!("{seconds:.2} s")
    } else {
        format!("{:.1} ms", seconds * 1e3)
    }
}

/// Milliseconds from seconds.
pub fn fmt_ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

pub fn fmt_mb(bytes: f64) -> String {
    format!("{:.0} MB", bytes / 1e6)
}

pub fn fmt_mbps(bytes_per_second: f64) -> String {
    format!(
        "{} MB/s",
        thousands((bytes_per_second / 1e6).round() as u64)
    )
}

/// A rate of requests (or anything) per second, with thousands separated.
pub fn fmt_rate(per_second: f64) -> String {
    format!("{}/s", thousands(per_second.round() as u64))
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Resident memory from KB.
pub fn fmt_rss(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

/// A ratio such as `1.43x`.
pub fn fmt_x(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.2}x")
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(fmt_rate(50_000.4), "50,000/s");
        assert_eq!(fmt_s(1.234), "1.23 s");
        assert_eq!(fmt_s(0.0123), "12.3 ms");
        assert!(markdown(&[Row::new("a", "x|y")]).contains("x\\|y"));
    }
}
