//! The `params` of large batches, kept outside SQLite: one append-only file per batch in
//! `<db>.params/`, named by the batch's first request id (never reused, unlike row ids).
//!
//! Why: a create's bytes are nearly all `params`. In SQLite they were written twice (to the
//! WAL, then by the checkpoint to the database file), page by page with two system calls a
//! page, and that was most of a 250 MB create. Here they are written once, in large
//! sequential writes, as a plain file, and the `requests` rows hold only their offset and
//! length. Batches that fit in one ingest chunk keep their params inline in SQLite, so small
//! batches cost no file at all.
//!
//! Consistency: a batch's file is written, then synced, before the transaction that makes the
//! batch visible commits, so a visible batch always has its params, even after an OS crash.
//! Files are removed after the transaction that drops their rows commits; a crash in between
//! leaves a file no row points to, removed at the next start ([`Blobs::remove_orphans`]).

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The most bytes [`Blobs::read_spans`] reads in one go.
const READ_TOGETHER_MAX: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// The params directory of the database at `db`: `<db>.params`.
    pub fn new(db: &Path) -> Self {
        let mut name = db.as_os_str().to_owned();
        name.push(".params");
        Self {
            dir: PathBuf::from(name),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, first_request: i64) -> PathBuf {
        self.dir.join(first_request.to_string())
    }

    /// Creates (or empties) the file of the batch whose first request id is `first_request`.
    pub fn create(&self, first_request: i64) -> io::Result<File> {
        std::fs::create_dir_all(&self.dir)?;
        File::create(self.path(first_request))
    }

    pub fn open(&self, first_request: i64) -> io::Result<File> {
        File::open(self.path(first_request))
    }

    /// Reads `len` bytes at `offset` of `file`.
    pub fn read(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    /// Reads each `(offset, len)` span of `file`, in order. Spans that follow each other in
    /// the file (a claim's requests usually do) are read together, up to
    /// [`READ_TOGETHER_MAX`] bytes at a time: one system call for many requests instead of
    /// one each. A joint read that fails is retried span by span, so only the spans that
    /// cannot be read fail.
    pub fn read_spans(file: &File, spans: &[(u64, usize)]) -> Vec<io::Result<Vec<u8>>> {
        let mut out = Vec::with_capacity(spans.len());
        let mut start = 0;
        while start < spans.len() {
            let (offset, first_len) = spans[start];
            let mut end = start + 1;
            let mut len = first_len;
            while let Some(&(next, next_len)) = spans.get(end) {
                if next != offset + len as u64 || len + next_len > READ_TOGETHER_MAX {
                    break;
                }
                len += next_len;
                end += 1;
            }
            match Self::read(file, offset, len) {
                Ok(joint) if end - start > 1 => {
                    let mut at = 0;
                    for &(_, span_len) in &spans[start..end] {
                        out.push(Ok(joint[at..at + span_len].to_vec()));
                        at += span_len;
                    }
                }
                Ok(single) => out.push(Ok(single)),
                Err(_) if end - start > 1 => {
                    out.extend(
                        spans[start..end]
                            .iter()
                            .map(|&(o, l)| Self::read(file, o, l)),
                    );
                }
                Err(e) => out.push(Err(e)),
            }
            start = end;
        }
        out
    }

    /// Removes a batch's file, if it has one.
    pub fn remove(&self, first_request: i64) {
        match std::fs::remove_file(self.path(first_request)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Harmless: the next start removes it.
                tracing::warn!(error = %e, first_request, "could not remove a params file");
            }
        }
    }

    /// Removes every file whose batch is not in `live` (first request ids of the batches
    /// that still have their requests): left by a crash between a commit and a removal.
    pub fn remove_orphans(&self, live: &HashSet<i64>) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            match name.to_str().and_then(|n| n.parse::<i64>().ok()) {
                Some(first) if live.contains(&first) => {}
                Some(first) => self.remove(first),
                // Not ours: leave it alone.
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use super::*;

    #[test]
    fn write_read_remove_and_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(&dir.path().join("s.db"));
        let mut file = blobs.create(1).unwrap();
        file.write_all(b"{\"a\":1}{\"b\":2}").unwrap();
        let file = blobs.open(1).unwrap();
        assert_eq!(Blobs::read(&file, 7, 7).unwrap(), b"{\"b\":2}");
        assert!(
            Blobs::read(&file, 10, 7).is_err(),
            "reads past the end fail"
        );
        // Adjacent spans are read together; a span past the end fails alone.
        let spans = Blobs::read_spans(&file, &[(0, 7), (7, 7), (3, 2), (12, 7)]);
        let spans: Vec<_> = spans.into_iter().map(Result::ok).collect();
        assert_eq!(
            spans,
            [
                Some(b"{\"a\":1}".to_vec()),
                Some(b"{\"b\":2}".to_vec()),
                Some(b"\":".to_vec()),
                None
            ]
        );
        let spans = Blobs::read_spans(&file, &[(0, 7), (7, 8)]);
        assert!(
            spans[0].is_ok() && spans[1].is_err(),
            "a failed joint read is retried span by span"
        );
        blobs.create(4_294_967_297).unwrap();
        std::fs::write(dir.path().join("s.db.params").join("notes.txt"), "x").unwrap();
        blobs
            .remove_orphans(&HashSet::from([4_294_967_297]))
            .unwrap();
        assert!(blobs.open(1).is_err());
        assert!(blobs.open(4_294_967_297).is_ok());
        assert!(dir.path().join("s.db.params").join("notes.txt").exists());
        blobs.remove(4_294_967_297);
        blobs.remove(4_294_967_297);
        assert!(blobs.open(4_294_967_297).is_err());
    }
}
