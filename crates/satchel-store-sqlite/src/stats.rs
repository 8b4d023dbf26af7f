//! The figures behind the metrics: batches by state, the counts summed, the oldest batch
//! still waiting. One pass over `batches` (no requests, no queue rows), so a scrape stays
//! cheap however many requests are stored.

use rusqlite::Connection;
use satchel_core::model::StoreStats;
use satchel_wire::{RequestCounts, Timestamp};

pub(crate) fn stats(conn: &Connection) -> rusqlite::Result<StoreStats> {
    let mut stats = StoreStats::default();
    let mut by_state = conn.prepare_cached(
        "SELECT state, count(*), sum(processing), sum(succeeded), sum(errored), sum(canceled), \
         sum(expired), min(CASE WHEN processing > 0 THEN created_at END) \
         FROM batches WHERE state IN (1, 2, 3) GROUP BY state",
    )?;
    let mut rows = by_state.query([])?;
    // Counts are never negative; SQLite hands them out as i64.
    let count = |row: &rusqlite::Row<'_>, i| row.get::<_, i64>(i).map(|n| n.max(0) as u64);
    while let Some(row) = rows.next()? {
        let status = crate::ops::status_of(row.get::<_, i64>(0)?)?;
        let counts = RequestCounts {
            processing: count(row, 2)?,
            succeeded: count(row, 3)?,
            errored: count(row, 4)?,
            canceled: count(row, 5)?,
            expired: count(row, 6)?,
        };
        let oldest = row.get::<_, Option<i64>>(7)?.map(Timestamp::from_micros);
        stats.add_group(status, count(row, 1)?, counts, oldest);
    }
    Ok(stats)
}
