//! What the parse keeps between items: the chunk being filled for the store, the ids seen,
//! the count, and the first problem found (which a serde error can only carry as text).

use serde::de;
use tokio::sync::mpsc;

use super::seen::SeenIds;
use super::{CHUNK_BYTES, CHUNK_REQUESTS, IngestError};
use crate::model::{IngestChunk, NewRequest};

pub(super) struct State<'a> {
    pub(super) sink: &'a mpsc::Sender<IngestChunk>,
    pub(super) max_requests: usize,
    pub(super) chunk: Vec<NewRequest>,
    pub(super) chunk_bytes: usize,
    pub(super) seen: SeenIds,
    pub(super) count: usize,
    pub(super) saw_requests: bool,
    /// The first problem found; the serde error that unwinds the parse only carries it out.
    pub(super) problem: Option<IngestError>,
}

impl State<'_> {
    /// Records `problem` and returns the error that stops the parse.
    pub(super) fn fail<E: de::Error>(&mut self, problem: IngestError) -> E {
        let message = problem.to_string();
        self.problem.get_or_insert(problem);
        E::custom(message)
    }

    pub(super) fn invalid<E: de::Error>(&mut self, message: String) -> E {
        self.fail(IngestError::Invalid(message))
    }

    pub(super) async fn flush(&mut self) -> Result<(), IngestError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_REQUESTS));
        self.chunk_bytes = 0;
        self.sink
            .send(IngestChunk::Requests(chunk))
            .await
            .map_err(|_| IngestError::StoreGone)
    }

    pub(super) async fn accept(&mut self, request: NewRequest) -> Result<(), IngestError> {
        if !self.seen.insert(&request.custom_id) {
            return Err(IngestError::Invalid(format!(
                "requests: custom_id's must be unique within a batch. Duplicate custom_id found: {}",
                request.custom_id
            )));
        }
        self.count += 1;
        // Past the limit the rest is still read, only to report the real count.
        if self.count <= self.max_requests {
            self.chunk_bytes += request.params.len();
            self.chunk.push(request);
            if self.chunk.len() >= CHUNK_REQUESTS || self.chunk_bytes >= CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }
}
