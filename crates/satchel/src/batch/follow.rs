//! `satchel batch results ID --follow`: print result lines as they settle, until the batch
//! ends, each exactly once, through server restarts (the follower reconnects and goes on from
//! its cursor). Lines come in settle order, not submission order.

use std::io::Write;

use futures::StreamExt;

use super::{Ctx, Failure};

/// Follows batch `id` from `after`, writing each line to `out`; returns how many lines and
/// bytes were written, and the cursor reached.
pub async fn follow(
    ctx: &Ctx,
    id: &str,
    after: &str,
    out: &mut dyn Write,
    target: &str,
) -> Result<(u64, u64, String), Failure> {
    let client = ctx.client()?;
    let batches = client.messages().batches();
    let pages = batches.follow(id, after);
    futures::pin_mut!(pages);
    let (mut written, mut bytes, mut cursor) = (0u64, 0u64, after.to_owned());
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                let _ = out.flush();
                return Err(Failure::Other(format!(
                    "{e}; stopped after {written} lines (go on with --after {cursor})"
                )));
            }
        };
        for line in &page.lines {
            let result = out.write_all(line).and_then(|()| out.write_all(b"\n"));
            if let Err(e) = result {
                return match e.kind() {
                    std::io::ErrorKind::BrokenPipe => Ok((written, bytes, cursor)),
                    _ => Err(Failure::Other(format!("cannot write to {target}: {e}"))),
                };
            }
            written += 1;
            bytes += line.len() as u64 + 1;
        }
        // Each page is out before the next is asked for: a reader sees lines as they land.
        match out.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Ok((written, bytes, cursor));
            }
            Err(e) => return Err(Failure::Other(format!("cannot write to {target}: {e}"))),
        }
        cursor = page.cursor;
    }
    Ok((written, bytes, cursor))
}
